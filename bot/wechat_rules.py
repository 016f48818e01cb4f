"""WeChat's platform rules that the code relies on, in one table.

The outbound client, the outbox sender and the fake WeChat API (bot/testing) all read these
values, so a test against the fake catches a broken rule. Each rule names its source and the
date it was checked; when WeChat changes a rule, change it here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Allowance:
    """How many customer-service messages may follow one interaction, and for how long."""

    messages: int
    window: timedelta


@dataclass(frozen=True)
class Rule:
    name: str
    value: object
    source: str
    checked: str


DOC_CUSTOM = "developers.weixin.qq.com/doc/offiaccount/Message_Management/Service_Center_messages.html"
DOC_TEMPLATE = "developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html"
DOC_SUBSCRIBE = "developers.weixin.qq.com/doc/offiaccount/Subscription_Messages/api.html"
DOC_TOKEN = "developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html"
DOC_MEDIA = "developers.weixin.qq.com/doc/offiaccount/Asset_Management/New_temporary_materials.html"
DOC_PASSIVE = "developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_standard_messages.html"
DOC_ERRORS = "developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html"
DOC_TAGS = "developers.weixin.qq.com/doc/offiaccount/User_Management/User_Tag_Management.html"
DOC_CONDITIONAL_MENU = "developers.weixin.qq.com/doc/offiaccount/Custom_Menus/Personalized_menu_interface.html"
CHECKED = "2026-11-22"

# Customer-service (客服) messages: a resident's own message opens a window of 5 messages in
# 48 hours; a menu click, a follow or a QR scan opens 3 messages within 1 minute.
CS_AFTER_MESSAGE = Allowance(messages=5, window=timedelta(hours=48))
CS_AFTER_EVENT = Allowance(messages=3, window=timedelta(minutes=1))

# Template messages: verified service accounts only, a template ID chosen in the admin console,
# recipient must follow the account, a daily quota per template (100,000 by default).
TEMPLATE_DAILY_QUOTA = 100_000
# Subscribe (一次性订阅) messages: one send per consent the resident gave in the mini-program.
SUBSCRIBE_SENDS_PER_CONSENT = 1

# Tokens: access_token from /cgi-bin/stable_token lives 7200 s; refresh ahead of expiry.
ACCESS_TOKEN_TTL = timedelta(seconds=7200)
ACCESS_TOKEN_REFRESH_MARGIN = timedelta(seconds=300)

# Media: images up to 2 MB; a temporary media_id is valid for 3 days.
MEDIA_IMAGE_MAX_BYTES = 2 * 1024 * 1024
MEDIA_ID_TTL = timedelta(days=3)
# The image formats the same page lists for an upload (not checked again on the date below): a
# stored WebP photo is shown in the mini-program, not sent as an image message.
MEDIA_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif"})
# Ours, not WeChat's: a media_id older than this is not relied on for an image message (the
# message may wait in the outbox, and the photo's own time is when the case was recorded).
MEDIA_ID_REUSE = timedelta(days=2, hours=12)

# Passive replies: WeChat waits 5 s (then retries, 3 tries in all); keep a text under ~2,000 bytes.
PASSIVE_REPLY_TIMEOUT = timedelta(seconds=5)
PASSIVE_REPLY_MAX_BYTES = 2000
CUSTOM_TEXT_MAX_BYTES = 2000

# User tags (tags/create, tags/members/batchtagging): at most 100 tags per account, a name of at
# most 30 bytes of UTF-8 (10 Chinese characters; WeChat's own staff confirmed bytes, not
# characters), at most 20 tags on one user, at most 50 openids per (un)tagging call. The system
# tags 0, 1 and 2 (未分组, 黑名单, 星标组) cannot be given or edited through the API.
TAGS_PER_ACCOUNT = 100
TAG_NAME_MAX_BYTES = 30
TAGS_PER_USER = 20
TAG_BATCH_MAX = 50

# Conditional (个性化) menus (menu/addconditional): a default menu must exist first; the match rule
# names at least one condition, and since 2021 only the tag and the phone's OS (gender, region and
# language are refused with 65320). Menus are tried newest first, the first that matches wins, and
# a user carrying several tags is matched on the tag applied last (note 6 of the page's earlier
# text). Linli gives every staff member at most one menu tag and publishes role menus from the
# lowest role to the highest, so either reading of the rule shows the same menu.
CONDITIONAL_MENU_ORDER = "newest first; a user with several tags matches on the tag applied last"

# Error codes the code reacts to.
ERR_BUSY = -1  # system busy: transient, retry with backoff
ERR_INVALID_TOKEN = 40001  # token invalid: refresh once and retry
ERR_TOKEN_EXPIRED = 42001  # token expired: refresh once and retry
ERR_INVALID_TEMPLATE = 40037  # unknown template_id: permanent
ERR_IP_NOT_WHITELISTED = 40164  # server IP not in the whitelist: permanent, a set-up error
ERR_NOT_SUBSCRIBED = 43004  # recipient does not follow the account: mark unsubscribed
ERR_SUBSCRIBE_REFUSED = 43101  # no consent for this subscribe template: permanent
ERR_API_QUOTA = 45009  # daily API quota reached: transient (retry after a long backoff)
ERR_OUT_OF_TIME = 45015  # customer-service window closed: out of allowance, do not retry
ERR_OUT_OF_COUNT = 45047  # customer-service count used up: out of allowance, do not retry
ERR_INVALID_MEDIA_ID = 40007  # media/get, an image message: the media_id expired or never existed
ERR_INVALID_OPENID = 40003  # not a follower of this account (or another account's openid)
ERR_INVALID_OPENID_LIST = 40032  # an empty openid list, or more than TAG_BATCH_MAX
ERR_TOO_MANY_TAGS = 45056  # the account already has TAGS_PER_ACCOUNT tags
ERR_USER_TAGS_FULL = 45059  # the user already carries TAGS_PER_USER tags
ERR_TAG_NAME_TAKEN = 45157  # invalid tag name: empty, or another tag has it (adopt that tag)
ERR_TAG_NAME_TOO_LONG = 45158  # tag name over TAG_NAME_MAX_BYTES
ERR_INVALID_TAG = 45159  # no such tag (deleted in the admin console?), or a system tag
ERR_NO_MENU = 46003  # menu/get, menu/trymatch: the account has no menu
ERR_NO_SUCH_CONDITIONAL_MENU = 65301  # menu/delconditional: unknown menuid
ERR_NO_SUCH_USER = 65302  # menu/trymatch: not a follower
ERR_NO_DEFAULT_MENU = 65303  # menu/addconditional before menu/create
ERR_MATCHRULE_EMPTY = 65304  # a conditional menu without any condition
ERR_MATCHRULE_PRIVATE = 65320  # a match rule on gender, region or language

TOKEN_ERRORS = frozenset({ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED})
TRANSIENT_ERRORS = frozenset({ERR_BUSY, ERR_API_QUOTA})
ALLOWANCE_ERRORS = frozenset({ERR_OUT_OF_TIME, ERR_OUT_OF_COUNT})

RULES: tuple[Rule, ...] = (
    Rule("customer-service allowance after a message", CS_AFTER_MESSAGE, DOC_CUSTOM, CHECKED),
    Rule("customer-service allowance after a click, follow or scan", CS_AFTER_EVENT, DOC_CUSTOM, CHECKED),
    Rule("template message daily quota", TEMPLATE_DAILY_QUOTA, DOC_TEMPLATE, CHECKED),
    Rule("subscribe message sends per consent", SUBSCRIBE_SENDS_PER_CONSENT, DOC_SUBSCRIBE, CHECKED),
    Rule("access token lifetime", ACCESS_TOKEN_TTL, DOC_TOKEN, CHECKED),
    Rule("image upload limit (bytes)", MEDIA_IMAGE_MAX_BYTES, DOC_MEDIA, CHECKED),
    Rule("temporary media_id lifetime", MEDIA_ID_TTL, DOC_MEDIA, CHECKED),
    Rule("passive reply timeout", PASSIVE_REPLY_TIMEOUT, DOC_PASSIVE, CHECKED),
    Rule("passive reply text size (bytes)", PASSIVE_REPLY_MAX_BYTES, DOC_PASSIVE, CHECKED),
    Rule("error codes", {ERR_BUSY: "busy", ERR_INVALID_TOKEN: "invalid token",
                         ERR_TOKEN_EXPIRED: "token expired", ERR_NOT_SUBSCRIBED: "not following",
                         ERR_API_QUOTA: "API quota", ERR_OUT_OF_TIME: "window closed",
                         ERR_OUT_OF_COUNT: "count used up"}, DOC_ERRORS, CHECKED),
    Rule("tags per account", TAGS_PER_ACCOUNT, DOC_TAGS, CHECKED),
    Rule("tag name size (bytes)", TAG_NAME_MAX_BYTES, DOC_TAGS, CHECKED),
    Rule("tags per user", TAGS_PER_USER, DOC_TAGS, CHECKED),
    Rule("openids per (un)tagging call", TAG_BATCH_MAX, DOC_TAGS, CHECKED),
    Rule("conditional menu matching", CONDITIONAL_MENU_ORDER, DOC_CONDITIONAL_MENU, CHECKED),
    Rule("tag and conditional menu error codes", {
        ERR_INVALID_OPENID: "not a follower", ERR_INVALID_OPENID_LIST: "openid list size",
        ERR_TOO_MANY_TAGS: "too many tags", ERR_USER_TAGS_FULL: "user has too many tags",
        ERR_TAG_NAME_TAKEN: "tag name taken or invalid", ERR_TAG_NAME_TOO_LONG: "tag name too long",
        ERR_INVALID_TAG: "no such tag", ERR_NO_MENU: "no menu",
        ERR_NO_SUCH_CONDITIONAL_MENU: "no such conditional menu", ERR_NO_SUCH_USER: "no such user",
        ERR_NO_DEFAULT_MENU: "no default menu", ERR_MATCHRULE_EMPTY: "empty match rule",
        ERR_MATCHRULE_PRIVATE: "match rule on private data"}, DOC_TAGS + " ; " + DOC_CONDITIONAL_MENU, CHECKED),
)
