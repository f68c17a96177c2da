"""The Material Circularity Indicator (Ellen MacArthur Foundation) of a product or design."""

from __future__ import annotations

from dataclasses import dataclass

from fabcity.core.errors import Invalid


@dataclass(frozen=True)
class MciInputs:
    mass: float  # M
    f_r: float = 0.0  # feedstock recycled
    f_u: float = 0.0  # feedstock reused
    f_s: float = 0.0  # feedstock from sustained biological production
    c_r: float = 0.0  # collected for recycling at end of life
    c_u: float = 0.0  # collected for reuse
    c_c: float = 0.0  # collected for composting
    c_e: float = 0.0  # collected for energy recovery
    e_c: float = 1.0  # efficiency of recycling at end of life
    e_f: float = 1.0  # efficiency of producing recycled feedstock
    lifetime_ratio: float = 1.0  # L / L_av
    use_ratio: float = 1.0  # U / U_av


@dataclass(frozen=True)
class Mci:
    v: float
    w0: float
    w_c: float
    w_f: float
    w: float
    lfi: float
    x: float
    mci: float


def check(inputs: MciInputs) -> None:
    fractions = ("f_r", "f_u", "f_s", "c_r", "c_u", "c_c", "c_e", "e_c", "e_f")
    for name in fractions:
        value = getattr(inputs, name)
        if not 0 <= value <= 1:
            raise Invalid(f"{name} is a fraction: between 0 and 1, not {value}")
    if inputs.mass <= 0:
        raise Invalid("mass must be positive")
    if inputs.f_r + inputs.f_u + inputs.f_s > 1 + 1e-12:
        raise Invalid("F_R + F_U + F_S cannot exceed 1: they are shares of the feedstock")
    if inputs.c_r + inputs.c_u + inputs.c_c + inputs.c_e > 1 + 1e-12:
        raise Invalid("C_R + C_U + C_C + C_E cannot exceed 1: they are shares of the product")
    if inputs.f_r > 0 and inputs.e_f == 0:
        raise Invalid("E_F must be above 0 when there is recycled feedstock")
    if inputs.lifetime_ratio <= 0 or inputs.use_ratio <= 0:
        raise Invalid("lifetime and use-intensity ratios must be positive")


def mci(inputs: MciInputs) -> Mci:
    """V, W, LFI, X and MCI, as in METRICS.md."""
    check(inputs)
    m = inputs.mass
    v = m * (1 - inputs.f_r - inputs.f_u - inputs.f_s)
    w0 = m * (1 - inputs.c_r - inputs.c_u - inputs.c_c - inputs.c_e)
    w_c = m * (1 - inputs.e_c) * inputs.c_r
    w_f = m * (1 - inputs.e_f) * inputs.f_r / inputs.e_f if inputs.f_r else 0.0
    w = w0 + (w_f + w_c) / 2
    lfi = (v + w) / (2 * m + (w_f - w_c) / 2)
    x = inputs.lifetime_ratio * inputs.use_ratio
    return Mci(v, w0, w_c, w_f, w, lfi, x, max(0.0, 1 - lfi * 0.9 / x))
