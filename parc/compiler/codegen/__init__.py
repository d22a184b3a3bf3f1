"""Code generation: a plan becomes a directory holding a torch.distributed program."""
