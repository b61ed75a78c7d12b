"""Galleries: enrolled people as embeddings (SQLite), searched exactly or with FAISS / Milvus."""
