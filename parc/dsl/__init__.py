"""The .par language: grammar, AST, parser, checker and diagnostics."""
