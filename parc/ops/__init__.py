"""The op catalog and symbolic dimensions: a leaf package shared by the dsl and the compiler."""
