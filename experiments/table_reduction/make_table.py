"""The study's table: 20 000 rows of 20 columns, x = W z + ε, whose truth is known.

z ~ N(0, diag(9, 4, 1)), W (20 × 3) with orthonormal columns, ε ~ N(0, 0.1 I). data=tabular
standardises each column, so PCA's expected test recon_mse for m components is the mean of
the eigenvalues beyond the m-th of D^(−1/2) C D^(−1/2), C = W diag(9, 4, 1) Wᵀ + 0.1 I,
D = diag(C); the script prints it for the study's m.

    python experiments/table_reduction/make_table.py low_rank.csv
"""

import sys

import numpy as np

VARIANCES, NOISE, COLUMNS, ROWS = np.array([9.0, 4.0, 1.0]), 0.1, 20, 20_000


def main(path: str) -> None:
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(COLUMNS, len(VARIANCES))))
    rng = np.random.default_rng(1)
    z = rng.normal(size=(ROWS, len(VARIANCES))) * np.sqrt(VARIANCES)  # (ROWS, 3)
    x = z @ basis.T + rng.normal(scale=np.sqrt(NOISE), size=(ROWS, COLUMNS))  # (ROWS, 20)
    header = ",".join(f"x{j}" for j in range(COLUMNS))
    np.savetxt(path, x, fmt="%.17g", delimiter=",", header=header, comments="")  # exact
    covariance = basis @ np.diag(VARIANCES) @ basis.T + NOISE * np.eye(COLUMNS)
    scale = 1 / np.sqrt(np.diag(covariance))
    eigenvalues = np.linalg.eigvalsh(covariance * np.outer(scale, scale))[::-1]  # descending
    for m in (1, 2, 3, 5):
        print(f"m = {m}: exact PCA test recon_mse {eigenvalues[m:].sum() / COLUMNS:.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
