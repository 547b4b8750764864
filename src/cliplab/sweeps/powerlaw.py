"""Power-law fit `y = a * x**b` by least squares in log-log space."""

from dataclasses import dataclass

import numpy as np


@dataclass
class PowerLaw:
    a: float
    exponent: float
    r2: float
    n: int

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=float) ** self.exponent

    def __str__(self) -> str:
        return f"{self.a:.3g} * C^{self.exponent:.4f} (R^2={self.r2:.3f}, {self.n} runs)"


def fit_power_law(x, y) -> PowerLaw | None:
    """Fits log y = log a + b log x over the positive, finite points; None with fewer than 2 such points
    or a single distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.unique(x).size < 2:
        return None
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (intercept + slope * lx)
    total = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    return PowerLaw(a=float(np.exp(intercept)), exponent=float(slope), r2=float(r2), n=int(len(x)))
