"""Stage 1: future-oriented reward data (D_r). Candidate replies, their simulated futures,
R_fut formulas, labels, statistics and export."""
