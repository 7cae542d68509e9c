"""Each chat platform's documented limits: post rates, which the pacing keeps under by default,
and sizes."""

from __future__ import annotations

# Documented platform limits (shared/reference): Slack about 1 post/s per channel;
# Telegram 1/s per private chat and 20/min per group. Paced at those rates less a margin for
# jitter: every worker's posts leave at the moments the shared bucket names (`Pacer`, with
# `ahead`), but what happens between that moment and the platform's clock (the request on
# its way, a busy event loop) can still bring two arrivals closer.
MARGIN = 1.03
SLACK_DEFAULT = 1 / MARGIN
TELEGRAM_PRIVATE_DEFAULT = 1 / MARGIN
TELEGRAM_GROUP_DEFAULT = 19 / 60  # a bucket of one plus 19 refills stays at 20 in any minute

TELEGRAM_TOPIC_NAME = 128  # characters of a Telegram forum topic's name
