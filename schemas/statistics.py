"""Official statistics (EW-MFA by category, population, GDP, CMU inputs, sectors) and MCI."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Exact decimals: send large or fractional figures as strings ("12345678.901") to keep every
# digit; JSON integers are exact either way.
Amount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
MfaCategory = Literal["MF1", "MF2", "MF3", "MF4"]


class MfaRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    de: Amount = Field(description="Domestic extraction.")
    imp: Amount | dict[str, Amount] = Field(
        description="Imports, or imports by partner, e.g. {abroad, rest_of_country}."
    )
    exp: Amount | dict[str, Amount] = Field(description="Exports, or exports by partner.")


class CmuInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rcv_r: Amount = Field(description="Waste recycled in domestic recovery plants (RCV_R).")
    imp_w: Amount = Field(description="Waste imported for recovery (IMP_w).")
    exp_w: Amount = Field(description="Waste exported for recovery (EXP_w).")


class Sector(BaseModel):
    """A sector of the self-sufficiency index: its production and consumption, or the ratio
    of the two as a study published it, and its weight."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    production: Amount | None = Field(default=None, description="p_s; with `consumption`.")
    consumption: Amount | None = Field(default=None, description="c_s; with `production`.")
    ratio: Amount | None = Field(
        default=None,
        description="p_s / c_s as published (1.2 for 120 %), instead of the two values.",
    )
    weight: Amount = Field(description="Weight of the sector, per mille.")

    @model_validator(mode="after")
    def _ratio_or_values(self) -> Sector:
        values = (self.production is not None, self.consumption is not None)
        if self.ratio is not None:
            if any(values):
                raise ValueError(
                    f"sector {self.name!r}: give `ratio`, or `production` and `consumption`, "
                    "not both"
                )
        elif not all(values):
            raise ValueError(
                f"sector {self.name!r}: give `production` and `consumption`, or their `ratio`"
            )
        elif self.consumption == 0:
            raise ValueError(
                f"sector {self.name!r}: consumption 0 leaves p/c undefined; leave the sector "
                "out, or give its ratio"
            )
        return self

    def share(self) -> Decimal:
        """p_s / c_s."""
        if self.ratio is not None:
            return self.ratio
        assert self.production is not None and self.consumption is not None  # validated
        return self.production / self.consumption


class StatisticsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Literal["t", "kg"] = Field(default="t", description="Unit of every mass below.")
    mfa: dict[MfaCategory, MfaRow] | None = Field(
        default=None,
        description="The EW-MFA table by category. Absent (or empty): the accounts are null, "
        "not 0.",
    )
    population: Annotated[int, Field(gt=0)] | None = None
    gdp: Amount | None = Field(default=None, description="GDP, in `currency`.")
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    cmu: CmuInputs | None = None
    sectors: list[Sector] = Field(
        default_factory=list, description="Absent (or empty): the sector index is null."
    )


class Category(BaseModel):
    de: Decimal
    imp: Decimal
    exp: Decimal


class Accounts(BaseModel):
    """The accounts; each is null where the statistics that make it were not given (no EW-MFA
    table: no DE, IMP, EXP, nor anything made of them), never 0."""

    unit: str
    de: Decimal | None
    imp: Decimal | None
    exp: Decimal | None
    dmi: Decimal | None = Field(description="DE + IMP")
    dmc: Decimal | None = Field(description="DE + IMP − EXP")
    ptb: Decimal | None = Field(description="IMP − EXP")
    dmc_per_person: Decimal | None
    resource_productivity: Decimal | None = Field(description="GDP / DMC")
    u: Decimal | None = Field(description="RCV_R − IMP_w + EXP_w")
    cmu: Decimal | None = Field(description="U / (DMC + U), a fraction")
    by_category: dict[str, Category]


class SectorIndex(BaseModel):
    value: Decimal = Field(description="100 × Σ min(1, p/c)·w / Σ w")
    sectors: int


class StatisticsOut(BaseModel):
    inputs: StatisticsIn
    accounts: Accounts
    sector_self_sufficiency: SectorIndex | None


Fraction = Annotated[float, Field(ge=0, le=1)]


class MciIn(BaseModel):
    """Inputs of the Material Circularity Indicator (Ellen MacArthur Foundation)."""

    model_config = ConfigDict(extra="forbid")

    mass: Annotated[float, Field(gt=0)] = Field(description="M, kg")
    f_r: Fraction = 0.0
    f_u: Fraction = 0.0
    f_s: Fraction = 0.0
    c_r: Fraction = 0.0
    c_u: Fraction = 0.0
    c_c: Fraction = 0.0
    c_e: Fraction = 0.0
    e_c: Fraction = 1.0
    e_f: Fraction = 1.0
    lifetime_ratio: Annotated[float, Field(gt=0)] = Field(default=1.0, description="L / L_av")
    use_ratio: Annotated[float, Field(gt=0)] = Field(default=1.0, description="U / U_av")


class MciOut(BaseModel):
    v: float = Field(description="Virgin feedstock, kg")
    w: float = Field(description="Unrecoverable waste, kg")
    w0: float
    w_c: float
    w_f: float
    lfi: float = Field(description="Linear Flow Index")
    x: float = Field(description="Utility")
    mci: float
