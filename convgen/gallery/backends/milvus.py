"""The ``milvus`` search backend: a Milvus collection, for galleries that outgrow one machine.

``uri`` is a milvus-lite file (the default, ``<db>.milvus.db``) or a server such as
``http://host:19530``. Milvus persists itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError, ModelMismatchError
from convgen.gallery.search import PRIVATE, Capabilities, SearchIndex, padded, parse_options, require

class MilvusIndex(SearchIndex):
    """A Milvus collection (fields ``id`` INT64 primary key, ``vector`` FLOAT_VECTOR, metric L2).

    Why: a Milvus cluster shards and replicates a collection over machines, so the gallery
    can outgrow one; milvus-lite runs the same API from a local file, for tests and laptops.
    Milvus's L2 metric is the squared Euclidean distance (it skips the square root), so its
    distances are returned as they are. Milvus persists every write itself; the generation
    lives in the collection's properties (``convgen.generation``), next to the data it
    describes, and is cleared before the first change after a save, so a crash mid-change
    leaves it unknown.

    Options: ``uri`` (default: ``<db>.milvus.db``, a milvus-lite file; or ``http://host:19530``),
    ``token``, ``collection`` (default: derived from the database file name; pass one per
    gallery on a shared server), ``index_type`` (default ``FLAT``, exact, for a local file,
    ``AUTOINDEX`` for a server), ``index_params``, ``search_params``, ``timeout`` (seconds).
    """

    kind = "milvus"
    capabilities = Capabilities(files=False, shared=True, cheap_to_open=False)
    defaults = {
        "uri": None, "token": "", "collection": None, "index_type": None,
        "index_params": None, "search_params": None, "timeout": None,
    }  # fmt: skip
    _PROPERTY = "convgen.generation"
    _BATCH = 4096  # rows per insert/delete request, well under Milvus's message size limit
    _MAX_K = 16384  # Milvus's largest topk

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        options = parse_options(self.kind, options, self.defaults)
        self.uri = str(options["uri"] or self.path.with_name(self.path.name + ".milvus.db"))
        local = not re.match(r"^[a-z][a-z0-9+.-]*://", self.uri)
        require("pymilvus", "pymilvus milvus-lite", self.kind)
        if local:
            require("milvus_lite", "pymilvus milvus-lite", self.kind)
        from pymilvus import DataType, MilvusClient

        self._datatype = DataType
        self.collection = options["collection"] or "convgen_" + re.sub(r"\W", "_", self.path.name, flags=re.ASCII)
        self._index_type = options["index_type"] or ("FLAT" if local else "AUTOINDEX")
        self._index_params = dict(options["index_params"] or {})
        self._search_params = dict(options["search_params"] or {})
        self._timeout = options["timeout"]
        try:
            self._client = MilvusClient(uri=self.uri, token=options["token"], timeout=self._timeout)
        except Exception as error:  # pymilvus raises several kinds for an unreachable server
            raise ConfigError(f"cannot connect to Milvus at {self.uri}: {error}") from None
        if local and Path(self.uri).is_file():
            Path(self.uri).chmod(PRIVATE)
        self._marked = False  # has the collection been marked "changed since the last save"?
        self._open_collection()

    def _open_collection(self) -> None:
        client = self._client
        if not client.has_collection(self.collection, timeout=self._timeout):
            self._create()
            return
        info = client.describe_collection(self.collection, timeout=self._timeout)
        fields = {field["name"]: field for field in info.get("fields", [])}
        vector, key = fields.get("vector"), fields.get("id")
        if not vector or not key or not key.get("is_primary") or key.get("type") != self._datatype.INT64:
            raise ConfigError(
                f"Milvus collection {self.collection!r} at {self.uri} was not made by convgen "
                "(it needs an INT64 primary key 'id' and a 'vector' field); pass collection=<another name>"
            )
        stored = int(vector.get("params", {}).get("dim", -1))
        if stored != self.dim:
            raise ModelMismatchError(
                f"Milvus collection {self.collection!r} holds {stored}-dimensional embeddings but the gallery's "
                f"model makes {self.dim}; open the gallery with the model it was enrolled with"
            )
        client.load_collection(self.collection, timeout=self._timeout)
        value = str((info.get("properties") or {}).get(self._PROPERTY, ""))
        self._generation = int(value) if re.fullmatch(r"-?\d+", value) else None
        self._marked = self._generation is None

    def _create(self) -> None:
        client, types = self._client, self._datatype
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", types.INT64, is_primary=True)
        schema.add_field("vector", types.FLOAT_VECTOR, dim=self.dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type=self._index_type, metric_type="L2", params=self._index_params)
        client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong", timeout=self._timeout
        )
        client.load_collection(self.collection, timeout=self._timeout)
        self._generation, self._marked = None, True

    def _set_generation(self, generation: int | None) -> None:
        value = "" if generation is None else str(generation)
        self._client.alter_collection_properties(self.collection, properties={self._PROPERTY: value}, timeout=self._timeout)

    def _changing(self) -> None:
        if not self._marked:  # once per save: the property is cleared before the data changes
            self._set_generation(None)
            self._marked = True
        super()._changing()

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"], timeout=self._timeout)
        return int(rows[0]["count(*)"])

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), self._BATCH):  # Milvus would keep both rows of a repeated key
            chunk = ids[start : start + self._BATCH].tolist()
            existing = self._client.get(self.collection, ids=chunk, output_fields=["id"], timeout=self._timeout)
            if existing:
                raise ValueError(f"ids already in the index: {[row['id'] for row in existing][:5]}; remove them first")
        for start in range(0, len(ids), self._BATCH):
            rows = [
                {"id": i, "vector": v}
                for i, v in zip(ids[start : start + self._BATCH].tolist(), vectors[start : start + self._BATCH])
            ]
            self._client.insert(self.collection, rows, timeout=self._timeout)

    def _remove(self, ids: np.ndarray) -> None:
        self._changing()
        for start in range(0, len(ids), self._BATCH):
            self._client.delete(self.collection, ids=ids[start : start + self._BATCH].tolist(), timeout=self._timeout)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > self._MAX_K:
            raise ValueError(f"the milvus backend returns at most {self._MAX_K} neighbours per query, asked for {k}")
        distances, labels = padded(len(queries), k)
        params = {"metric_type": "L2", "params": self._search_params}
        step = max(1, min(1024, (1 << 20) // k))
        for start in range(0, len(queries), step):
            block = queries[start : start + step]
            hits = self._client.search(
                self.collection, data=list(block), limit=k, search_params=params,
                output_fields=["id"], timeout=self._timeout,
            )  # fmt: skip
            for j, row in enumerate(hits):
                found = len(row.ids)
                distances[start + j, :found] = row.distances
                labels[start + j, :found] = row.ids
        return distances, labels

    def _clear(self) -> None:
        self._client.drop_collection(self.collection, timeout=self._timeout)
        self._create()

    def _save(self, generation: int) -> None:
        self._client.flush(self.collection, timeout=self._timeout)  # durable before it is vouched for
        self._set_generation(generation)
        self._marked = False

    def _close(self) -> None:
        self._client.close()
