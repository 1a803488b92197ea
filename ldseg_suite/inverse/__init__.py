"""Forward operators with adjoints for inverse problems (shared by LSD-EBM, MGDCR and TPDM)."""
