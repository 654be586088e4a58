"""Data sources, records, splits and the input pipeline (SPEC §4)."""

from kmedssl.data import phantom
from kmedssl.data.errors import DataError
from kmedssl.data.records import FRONTAL_VIEWS, LATERAL_VIEWS, ImageRecord
