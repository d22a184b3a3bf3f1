"""What a generated program needs at run time: torch, triton and this package only."""
