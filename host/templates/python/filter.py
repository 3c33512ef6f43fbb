"""Keep orders above a configured amount: {"min": 100}."""

from dataclasses import dataclass

import weir


@weir.config
@dataclass
class Config:
    min: float


@weir.filter
def big_orders(record, config):
    return record.json()["amount"] > config.min
