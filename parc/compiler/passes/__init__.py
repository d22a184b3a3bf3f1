"""The pass pipeline: each pass is a named function Graph -> Graph, in one ordered list."""
