"""A cache's faiss index (being built): open_index returns None until one exists."""


def open_index(cache_path, layer):
    return None
