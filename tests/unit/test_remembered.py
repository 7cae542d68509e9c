"""Every cache that holds customers' numbers is forgotten together."""

from __future__ import annotations

from bridge import phones, remembered
from bridge.intake import ingest
from bridge.jobs import ConversationKey, InboxJob
from bridge.store import group_writes


def test_forget_clears_what_every_part_remembers_of_a_number() -> None:
    customer = ConversationKey(receiver="32460200000", sender="32470123456")
    phones.key("+32 470 12 34 56")
    phones.international("32470123456")
    ingest._inbox_job(customer.receiver, customer.sender)
    group_writes._job_columns("support", InboxJob(conversation=customer))
    caches = [phones.key, phones._formatted, ingest._inbox_job, group_writes._job_columns]
    assert all(cache.cache_info().currsize for cache in caches)
    remembered.forget()
    assert [cache.cache_info().currsize for cache in caches] == [0, 0, 0, 0]
