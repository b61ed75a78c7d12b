"""Galleries: enrolled people as embeddings (SQLite), searched by a registered search backend
(the core's exact, FAISS and Milvus ones, or a plugin's)."""
