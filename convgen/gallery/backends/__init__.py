"""The core's search backends, one module each (`exact`, `faiss`, `milvus`).

Each is registered by ``convgen.default_plugins.search`` through the
``register_search_backends`` hook, exactly as a third party registers its own; the
interface they implement is `convgen.gallery.search.SearchIndex`.
"""
