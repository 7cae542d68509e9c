"""What forgetting a customer does to an alert group's key and labels."""

from __future__ import annotations

import json

from bridge.intake import alerts
from bridge.ops.erasure import without_number
from bridge.store.erasure import AlertGroup

CUSTOMER, SHOWN = "32470333003", "+32 470 33 30 03"


OTHER = "32470444004"


def group_with(group_id: int, **labels: str) -> AlertGroup:
    route = {"receiver": ["3247*"]}
    key = alerts.key_of(route, dict(labels))
    return AlertGroup(group_id, key, route, dict(labels), "Clinic", [CUSTOMER, OTHER], 3)


def test_a_forgotten_receiver_label_leaves_a_group_key_of_the_same_shape_and_its_own() -> None:
    first = without_number(group_with(7, receiver=CUSTOMER, delivery_code_detail="2000"), CUSTOMER)
    second = without_number(group_with(8, receiver=CUSTOMER, delivery_code_detail="2000"), CUSTOMER)

    assert CUSTOMER not in first.group_key and CUSTOMER not in json.dumps(first.labels)
    assert first.labels == {"receiver": "forgotten", "delivery_code_detail": "2000"}
    assert first.group_key == alerts.key_of(
        {"receiver": ["3247*"]}, {"receiver": "forgotten-7", "delivery_code_detail": "2000"}
    )
    assert json.loads(first.group_key).keys() == json.loads(group_with(7).group_key).keys()
    assert first.group_key != second.group_key  # two forgotten customers: still two groups
    assert (first.receivers, first.others) == ([OTHER], 4)  # still counted, among the others
    untouched = group_with(9, receiver=OTHER)
    assert without_number(untouched, CUSTOMER).group_key == untouched.group_key
