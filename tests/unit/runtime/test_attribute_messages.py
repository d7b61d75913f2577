"""The attributes core's table as the service's messages: ids follow the table's index (a
dropped footprint leaves a gap), class probabilities go only with a call or a reason."""

from __future__ import annotations

import math

import geopandas as gpd
import pandas as pd
from shapely.geometry import box

from urbanfabric.attributes.age import AGE_CLASS_LABELS
from urbanfabric.attributes.function import FUNCTION_CLASSES
from urbanfabric.runtime.attribute_messages import attribute_messages


def _table() -> pd.DataFrame:
    rows = []
    for i, (function, reason, age_class) in enumerate([("residential", "", "1990-2009"), ("", "out of domain", ""),
                                                       ("", "", "")]):
        row = {"footprint_area_m2": 100.0 + i, "height_m": 9.0, "height_p05": 6.0, "height_p95": 12.0,
               "floors": 3, "function": function, "function_probability": 0.8 if function else math.nan,
               "storey_height_m": 3.0, "rasmi_function": "RS", "year_built": 1995.0 if age_class else math.nan,
               "year_built_p05": math.nan, "year_built_p95": math.nan, "age_class": age_class,
               "age_class_probability": 0.5 if age_class else math.nan, "height_source": "model",
               "height_source_reason": "", "function_unknown_reason": reason, "function_ood_score": 0.1,
               "age_class_unknown_reason": "", "age_class_ood_score": None}
        row.update({f"p_function_{c}": 1.0 / len(FUNCTION_CLASSES) for c in FUNCTION_CLASSES})
        row.update({f"p_age_{k}": 1.0 / len(AGE_CLASS_LABELS) for k in range(len(AGE_CLASS_LABELS))})
        rows.append(row)
    return pd.DataFrame(rows, index=[0, 2, 3])  # footprint 1 was dropped by the core


def test_messages_follow_the_index_and_carry_probabilities_only_with_a_call_or_a_reason():
    footprints = gpd.GeoDataFrame({"building_id": ["a", "b", "c", "d"]},
                                  geometry=[box(i, 0, i + 1, 1) for i in range(4)], crs=4326)
    out = attribute_messages(_table(), footprints)
    assert [m.building_id for m in out] == ["a", "c", "d"]
    assert [len(m.function_probabilities) for m in out] == [len(FUNCTION_CLASSES), len(FUNCTION_CLASSES), 0]
    assert [len(m.age_class_probabilities) for m in out] == [len(AGE_CLASS_LABELS), 0, 0]
    assert out[1].function_unknown_reason == "out of domain" and math.isnan(out[1].function_probability)
    assert math.isnan(out[0].age_class_ood_score) and out[0].floors == 3 and out[2].footprint_area_m2 == 102.0
