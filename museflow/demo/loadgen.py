"""Synthetic multi-tenant transaction events with ground truth, for load tests and demo models.

Tenants differ in size, fraud rate, currency and amount scale; each intent has its own fraud
signal (card-not-present: amount, velocity, distance, merchant; account-takeover: logins,
devices, password resets, IP risk), strong enough to learn (AUC about 0.85-0.95) and noisy
enough to be realistic. ``drift`` moves the feature distributions as event time advances, so
drift monitoring has something to see. Everything is drawn from one seeded numpy generator:
the same seed, tenants and start time give the same events.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from museflow.errors import ConfigError

__all__ = [
    "ACCOUNT_TAKEOVER",
    "CARD_NOT_PRESENT",
    "DEFAULT_TENANTS",
    "GeneratedColumns",
    "GeneratedEvent",
    "TenantProfile",
    "TransactionGenerator",
]

CARD_NOT_PRESENT = "card-not-present"
ACCOUNT_TAKEOVER = "account-takeover"

_MCC_COMMON = ("5411", "5812", "5311", "5999", "5541", "4121", "5912", "5651")
_MCC_COMMON_P = (0.24, 0.18, 0.14, 0.12, 0.1, 0.09, 0.07, 0.06)
_MCC_RISKY = ("5732", "7995", "4829", "5944")
_MCC_TRANSFER = ("4829", "6012", "6051")
_FOREIGN = ("NL", "FR", "ES", "IT", "PL", "RO", "NG", "BR", "CN", "RU", "UA", "IN")
_CHANNELS = ("web", "app", "phone", "pos")


@dataclass(frozen=True)
class TenantProfile:
    """One synthetic tenant: its share of traffic, its fraud rate and the intents it asks for."""

    name: str
    weight: float
    fraud_rate: float
    intents: tuple[str, ...]
    intent_shares: tuple[float, ...] = ()
    currency: str = "EUR"
    country: str = "DE"
    amount_scale: float = 1.0
    population: int = 50_000

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ConfigError(f"tenant {self.name!r}: weight must be > 0, got {self.weight}")
        if not 0 <= self.fraud_rate < 1:
            raise ConfigError(f"tenant {self.name!r}: fraud_rate must be in [0, 1), got {self.fraud_rate}")
        if not self.intents:
            raise ConfigError(f"tenant {self.name!r}: intents must not be empty")
        if self.intent_shares and (
            len(self.intent_shares) != len(self.intents) or min(self.intent_shares) < 0
        ):
            raise ConfigError(
                f"tenant {self.name!r}: intent_shares must give one share >= 0 per intent "
                f"({len(self.intents)}), got {self.intent_shares}"
            )
        if self.amount_scale <= 0 or self.population < 1:
            raise ConfigError(f"tenant {self.name!r}: amount_scale and population must be positive")

    def shares(self) -> tuple[float, ...]:
        """Normalised intent shares (uniform when none are given)."""
        raw = self.intent_shares or (1.0,) * len(self.intents)
        total = sum(raw)
        return tuple(s / total for s in raw)


DEFAULT_TENANTS: tuple[TenantProfile, ...] = (
    TenantProfile(
        "acme-bank", 0.6, 0.004, (CARD_NOT_PRESENT, ACCOUNT_TAKEOVER), (0.75, 0.25),
        currency="EUR", country="DE", amount_scale=1.0, population=200_000,
    ),
    TenantProfile(
        "globex-pay", 0.3, 0.012, (CARD_NOT_PRESENT, ACCOUNT_TAKEOVER), (0.85, 0.15),
        currency="USD", country="US", amount_scale=0.6, population=80_000,
    ),
    TenantProfile(
        "initech-fin", 0.1, 0.03, (CARD_NOT_PRESENT, ACCOUNT_TAKEOVER), (0.6, 0.4),
        currency="GBP", country="GB", amount_scale=1.8, population=20_000,
    ),
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    """A TransactionEvent dict (schema-conformant) and whether it is fraud (ground truth)."""

    event: dict[str, Any]
    is_fraud: bool


@dataclass(frozen=True)
class GeneratedColumns:
    """A batch as columns (numpy arrays / lists), before it is turned into event dicts."""

    n: int
    event_id: list[str]
    tenant: list[str]
    intent: list[str]
    event_time: IntArray
    card_id: list[str | None]
    account_id: list[str]
    device_id: list[str | None]
    amount: FloatArray
    currency: list[str]
    merchant_id: list[str]
    merchant_category: list[str]
    merchant_country: list[str]
    channel: list[str]
    numeric: dict[str, FloatArray]
    counts: dict[str, IntArray]
    flags: dict[str, BoolArray]
    present: dict[str, BoolArray]
    is_fraud: BoolArray
    drift: FloatArray


class TransactionGenerator:
    """Seeded generator of realistic multi-tenant transaction events.

    ``drift`` in [0, 1] is how far feature distributions have moved once ``drift_ramp_s``
    seconds of event time have passed since the first event (0 disables the ramp: full drift
    at once). ``start_ms`` is the first event time (default: wall clock at construction);
    later calls continue where the previous one ended unless given their own ``start_ms``.
    """

    def __init__(
        self,
        tenants: Sequence[TenantProfile] = DEFAULT_TENANTS,
        seed: int = 0,
        drift: float = 0.0,
        *,
        rate: float = 1000.0,
        start_ms: int | None = None,
        drift_ramp_s: float = 600.0,
    ) -> None:
        if not tenants:
            raise ConfigError("TransactionGenerator needs at least one tenant")
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise ConfigError(f"tenant names must be unique, got {names}")
        if not 0.0 <= drift <= 1.0:
            raise ConfigError(f"drift must be in [0, 1], got {drift}")
        if rate <= 0 or drift_ramp_s < 0:
            raise ConfigError(f"rate must be > 0 and drift_ramp_s >= 0, got {rate}, {drift_ramp_s}")
        self.tenants = tuple(tenants)
        self.seed = seed
        self.drift = drift
        self.rate = rate
        self.drift_ramp_s = drift_ramp_s
        self._rng = np.random.default_rng(seed)
        self._clock_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self._origin_ms = self._clock_ms
        self._intents = sorted({i for t in self.tenants for i in t.intents})
        weights = np.array([t.weight for t in self.tenants], dtype=np.float64)
        self._tenant_p = weights / weights.sum()
        self._fraud_rate = np.array([t.fraud_rate for t in self.tenants], dtype=np.float64)
        self._scale = np.log(np.array([t.amount_scale for t in self.tenants], dtype=np.float64))
        self._population = np.array([t.population for t in self.tenants], dtype=np.int64)
        self._home = [t.country for t in self.tenants]

    @property
    def intents(self) -> tuple[str, ...]:
        """Every intent some tenant asks for, sorted."""
        return tuple(self._intents)

    def generate(self, n: int, start_ms: int | None = None, rate: float | None = None) -> list[GeneratedEvent]:
        """``n`` events whose times start at ``start_ms`` with exponential gaps at ``rate`` events/s."""
        cols = self.generate_columns(n, start_ms=start_ms, rate=rate)
        return _to_events(cols)

    def generate_columns(self, n: int, start_ms: int | None = None, rate: float | None = None) -> GeneratedColumns:
        """The same draws as :meth:`generate`, as columns (fast path for analysis and training)."""
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        rng = self._rng
        rate = self.rate if rate is None else rate
        if rate <= 0:
            raise ConfigError(f"rate must be > 0, got {rate}")
        start = self._clock_ms if start_ms is None else int(start_ms)
        gaps = rng.exponential(1000.0 / rate, size=n)
        event_time = start + np.floor(np.cumsum(gaps)).astype(np.int64)
        if n:
            self._clock_ms = int(event_time[-1]) + 1
        if self.drift_ramp_s > 0:
            ramp = np.clip((event_time - self._origin_ms) / (self.drift_ramp_s * 1000.0), 0.0, 1.0)
            d = self.drift * ramp
        else:
            d = np.full(n, self.drift)

        t_idx = rng.choice(len(self.tenants), size=n, p=self._tenant_p)
        u = rng.random(n)
        i_idx = np.zeros(n, dtype=np.int64)
        for k, tenant in enumerate(self.tenants):
            mask = t_idx == k
            cum = np.cumsum(tenant.shares())
            cum[-1] = 1.0
            local = np.searchsorted(cum, u[mask], side="right")
            lookup = np.array([self._intents.index(i) for i in tenant.intents], dtype=np.int64)
            i_idx[mask] = lookup[np.minimum(local, len(lookup) - 1)]
        intent_names = np.array(self._intents, dtype=object)[i_idx]
        is_ato = intent_names == ACCOUNT_TAKEOVER
        is_cnp = ~is_ato
        fraud = rng.random(n) < self._fraud_rate[t_idx]

        strength = np.where(fraud, rng.beta(1.6, 1.4, size=n), 0.0)
        noisy = (~fraud) & (rng.random(n) < 0.05)
        strength = np.where(noisy, rng.uniform(0.0, 0.8, size=n), strength)
        sc = strength * is_cnp
        sa = strength * is_ato

        cust_mu = 3.5 + self._scale[t_idx] + 0.7 * is_ato + rng.normal(0.0, 0.6, n) + np.log1p(0.8 * d)
        log_amount = cust_mu + rng.normal(0.0, 0.6, n) + 1.1 * sc + 0.9 * sa
        amount = np.round(np.exp(log_amount), 2)
        amount_avg = np.round(np.exp(cust_mu + rng.normal(0.0, 0.15, n)), 2)

        velocity_1h = rng.poisson(0.5 + 2.5 * sc + 0.4 * sa + 1.0 * d)
        velocity_24h = velocity_1h + rng.poisson(3.0 + 4.0 * sc + 1.0 * sa + 2.0 * d)
        distance = np.round(np.exp(np.log(6.0) + rng.normal(0.0, 1.1, n) + 2.0 * sc + 1.4 * sa + 0.8 * d), 1)
        account_age = np.floor(np.exp(rng.normal(np.log(900.0), 0.9, n) - 1.3 * sc - 0.8 * d)).astype(np.int64)
        new_device = rng.random(n) < (0.05 + 0.7 * sa + 0.15 * sc + 0.15 * d)
        device_age = np.where(new_device, 0, np.floor(rng.exponential(250.0, n)).astype(np.int64) + 1)
        failed_logins = rng.poisson(0.15 + 2.5 * sa + 0.1 * sc + 0.3 * d)
        password_reset = rng.random(n) < (0.02 + 0.45 * sa + 0.02 * sc)
        ip_risk = np.clip(
            rng.beta(2.0, 9.0, n) + 0.35 * sa + 0.12 * sc + rng.normal(0.0, 0.05, n) + 0.08 * d, 0.0, 1.0
        ).round(4)
        billing_match = rng.random(n) < (0.95 - 0.5 * sc - 0.1 * d)
        night = rng.random(n) < 0.6 * strength
        hour = np.where(night, rng.normal(3.0, 2.5, n), rng.normal(14.0 + 3.0 * d, 4.0, n))
        hour_of_day = np.mod(np.floor(hour), 24).astype(np.int64)

        mcc = np.array(_MCC_COMMON, dtype=object)[rng.choice(len(_MCC_COMMON), size=n, p=_MCC_COMMON_P)]
        risky = rng.random(n) < 0.6 * sc
        mcc = np.where(risky, np.array(_MCC_RISKY, dtype=object)[rng.integers(0, len(_MCC_RISKY), n)], mcc)
        transfer = is_ato & (rng.random(n) < 0.75)
        mcc = np.where(
            transfer, np.array(_MCC_TRANSFER, dtype=object)[rng.integers(0, len(_MCC_TRANSFER), n)], mcc
        )
        foreign = rng.random(n) < (0.08 + 0.35 * sc + 0.2 * sa + 0.1 * d)
        home = np.array(self._home, dtype=object)[t_idx]
        country = np.where(foreign, np.array(_FOREIGN, dtype=object)[rng.integers(0, len(_FOREIGN), n)], home)

        web_p = np.clip(0.45 + 0.3 * sc - 0.3 * d, 0.0, 1.0)
        phone_p = np.where(is_ato, 0.08, 0.05)
        cu = rng.random(n)
        ch_idx = np.where(cu < web_p, 0, np.where(cu < 1.0 - phone_p, 1, 2))
        channel = np.array(_CHANNELS, dtype=object)[ch_idx]

        population = self._population[t_idx]
        customer = rng.integers(0, np.iinfo(np.int64).max, n) % population
        merchant = rng.integers(0, 5000, n)
        device_known = ch_idx != 2
        has_card = is_cnp | (rng.random(n) < 0.4)
        present = {
            "distance_km": rng.random(n) >= 0.03,
            "ip_risk": rng.random(n) >= 0.02,
            "device_age_days": device_known,
            "billing_shipping_match": is_cnp,
        }
        ids = rng.integers(0, 2**63 - 1, size=(n, 2), dtype=np.int64)

        tenants = [t.name for t in self.tenants]
        currencies = [t.currency for t in self.tenants]
        t_list = t_idx.tolist()
        cust_list = customer.tolist()
        tenant_names = [tenants[k] for k in t_list]
        fraud_device = rng.integers(0, 10**9, n).tolist()
        new_dev_list = new_device.tolist()
        return GeneratedColumns(
            n=n,
            event_id=[f"{a:016x}-{b:016x}" for a, b in ids.tolist()],
            tenant=tenant_names,
            intent=intent_names.tolist(),
            event_time=event_time,
            card_id=[
                f"{tn}-card-{c:07d}" if hc else None
                for tn, c, hc in zip(tenant_names, cust_list, has_card.tolist(), strict=True)
            ],
            account_id=[f"{tn}-acct-{c:07d}" for tn, c in zip(tenant_names, cust_list, strict=True)],
            device_id=[
                (f"dev-{fd:09d}" if nd else f"{tn}-dev-{c:07d}") if known else None
                for tn, c, known, nd, fd in zip(
                    tenant_names, cust_list, device_known.tolist(), new_dev_list, fraud_device, strict=True
                )
            ],
            amount=amount,
            currency=[currencies[k] for k in t_list],
            merchant_id=[f"m-{c}-{m:05d}" for c, m in zip(mcc.tolist(), merchant.tolist(), strict=True)],
            merchant_category=mcc.tolist(),
            merchant_country=country.tolist(),
            channel=channel.tolist(),
            numeric={"amount_avg_30d": amount_avg, "distance_km": distance, "ip_risk": ip_risk},
            counts={
                "velocity_1h": velocity_1h.astype(np.int64),
                "velocity_24h": velocity_24h.astype(np.int64),
                "account_age_days": account_age,
                "device_age_days": device_age.astype(np.int64),
                "failed_logins_24h": failed_logins.astype(np.int64),
                "hour_of_day": hour_of_day,
            },
            flags={
                "new_device": new_device,
                "password_reset_7d": password_reset,
                "billing_shipping_match": billing_match,
            },
            present=present,
            is_fraud=fraud,
            drift=d,
        )


def _to_events(cols: GeneratedColumns) -> list[GeneratedEvent]:
    """Turn columns into schema-conformant event dicts (attributes absent where not present)."""
    n = cols.n
    attr_cols: list[tuple[str, list[Any], list[bool] | None]] = []
    groups: tuple[Mapping[str, npt.NDArray[Any]], ...] = (cols.numeric, cols.counts, cols.flags)
    for group in groups:
        for key, column in group.items():
            present = cols.present.get(key)
            attr_cols.append((key, column.tolist(), None if present is None else present.tolist()))
    attributes: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values, mask in attr_cols:
        if mask is None:
            for attrs, value in zip(attributes, values, strict=True):
                attrs[key] = value
        else:
            for attrs, value, keep in zip(attributes, values, mask, strict=True):
                if keep:
                    attrs[key] = value
    rows = zip(
        cols.event_id, cols.tenant, cols.intent, cols.event_time.tolist(), cols.card_id, cols.account_id,
        cols.device_id, cols.amount.tolist(), cols.currency, cols.merchant_id, cols.merchant_category,
        cols.merchant_country, cols.channel, attributes, cols.is_fraud.tolist(), strict=True,
    )
    return [
        GeneratedEvent(
            {
                "event_id": eid, "tenant": tenant, "intent": intent, "event_time": ts,
                "card_id": card, "account_id": account, "device_id": device, "amount": amount,
                "currency": currency, "merchant_id": merchant, "merchant_category": mcc,
                "merchant_country": country, "channel": channel, "attributes": attrs,
            },
            fraud,
        )
        for (
            eid, tenant, intent, ts, card, account, device, amount, currency, merchant, mcc, country,
            channel, attrs, fraud,
        ) in rows
    ]
