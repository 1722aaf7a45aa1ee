"""sparsegemm: fast sparse x dense matmul on CPUs."""
