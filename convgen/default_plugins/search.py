"""Built-in search backends for galleries: ``exact`` (default), ``faiss`` (HNSW) and ``milvus``.

Registered by reference, as a third party would: each module (and its optional
dependency) is imported only when a gallery uses that backend.
"""

import convgen


@convgen.hookimpl
def register_search_backends(register):
    register("exact", "convgen.gallery.backends.exact:ExactIndex")
    register("faiss", "convgen.gallery.backends.faiss:FaissIndex")
    register("milvus", "convgen.gallery.backends.milvus:MilvusIndex")
