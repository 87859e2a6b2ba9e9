"""Wire numbers of the LwM2M bootstrap interface: one ``IntEnum`` per table, each with its source.

``ace_core.registry`` holds the ACE tables (STYLE §3.6 rule 1). The tables here belong to the bootstrap adapter
only: OMA LwM2M object and resource ids (OMA LwM2M Object and Resource Registry, as the reference quotes it),
the OMA-TLV type field (OMA LwM2M Core §7.4.3), and the IANA tables the adapter needs that ``ace_core`` does not
carry (CoAP methods RFC 7252 §12.1.1, the LwM2M Content-Formats of the CoRE Parameters registry, SenML CBOR
labels RFC 8428 §6 Table 4). Facts come from ``shared/reference/lwm2m-bootstrap.md`` (cited as "ref. §n").

The adapter sits in the sans-IO core, so it cannot take ``aiocoap.numbers`` (STYLE §3.1); the CoAP transport may
and must agree with these values.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "EXCHANGE_LIFETIME",
    "CoapMethod",
    "Lwm2mContentFormat",
    "ObjectId",
    "OscoreResource",
    "SecurityMode",
    "SecurityResource",
    "SenmlLabel",
    "ServerResource",
    "TlvKind",
]

#: RFC 7252 §4.8.2 EXCHANGE_LIFETIME with the default transmission parameters (247 s on UDP). A client fails its
#: bootstrap when Bootstrap-Finish does not arrive within this time after the last bootstrap command (ref. §1).
EXCHANGE_LIFETIME = 247


class CoapMethod(IntEnum):
    """CoAP method codes (class 0). RFC 7252 §12.1.1."""

    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4


class Lwm2mContentFormat(IntEnum):
    """CoAP Content-Formats used on the LwM2M bootstrap interface (IANA CoRE Parameters; ref. §2.4).

    ``text/plain`` RFC 7252 §12.3; ``application/link-format`` RFC 6690 §7.3; ``application/octet-stream`` and
    ``application/cbor`` RFC 7252 §12.3 / RFC 8949 §9.5; SenML RFC 8428 §12.3; the ``vnd.oma.lwm2m`` formats
    from OMA LwM2M Core §7.4. 1542 and 1543 are the pre-registration TLV and JSON numbers that Wakaama still
    accepts (ref. §2.4).
    """

    TEXT_PLAIN = 0
    LINK_FORMAT = 40
    OCTET_STREAM = 42
    CBOR = 60
    SENML_JSON = 110
    SENML_CBOR = 112
    OLD_TLV = 1542
    OLD_JSON = 1543
    TLV = 11542
    LWM2M_JSON = 11543
    LWM2M_CBOR = 11544


class TlvKind(IntEnum):
    """Bits 7-6 of the OMA-TLV type byte. OMA LwM2M Core §7.4.3 (ref. §3)."""

    OBJECT_INSTANCE = 0b00
    RESOURCE_INSTANCE = 0b01
    MULTIPLE_RESOURCE = 0b10
    RESOURCE_VALUE = 0b11


class ObjectId(IntEnum):
    """LwM2M object ids the bootstrap server writes (OMA LwM2M Object Registry; ref. §2)."""

    SECURITY = 0
    SERVER = 1
    ACCESS_CONTROL = 2
    DEVICE = 3
    OSCORE = 21


class SecurityResource(IntEnum):
    """Resources of the Security object ``/0`` (``LWM2M_Security-v1_1_1.xml``; 1.2 ids per Wakaama; ref. §2.1)."""

    SERVER_URI = 0
    BOOTSTRAP_SERVER = 1
    SECURITY_MODE = 2
    PUBLIC_KEY_OR_IDENTITY = 3
    SERVER_PUBLIC_KEY = 4
    SECRET_KEY = 5
    SMS_SECURITY_MODE = 6
    SMS_BINDING_KEY_PARAMETERS = 7
    SMS_BINDING_SECRET_KEYS = 8
    SERVER_SMS_NUMBER = 9
    SHORT_SERVER_ID = 10
    CLIENT_HOLD_OFF_TIME = 11
    BOOTSTRAP_SERVER_ACCOUNT_TIMEOUT = 12
    MATCHING_TYPE = 13
    SNI = 14
    CERTIFICATE_USAGE = 15
    DTLS_TLS_CIPHERSUITE = 16
    OSCORE_SECURITY_MODE = 17
    SECONDARY_SERVER_URI = 25
    MQTT_SERVER = 26
    COSE_SECURITY = 27


class SecurityMode(IntEnum):
    """Values of ``/0/x/2`` Security Mode (ref. §2.1)."""

    PSK = 0
    RPK = 1
    CERTIFICATE = 2
    NO_SEC = 3
    CERTIFICATE_EST = 4


class ServerResource(IntEnum):
    """Resources of the Server object ``/1`` (ids per Wakaama ``liblwm2m.h``; ref. §2.2)."""

    SHORT_SERVER_ID = 0
    LIFETIME = 1
    DEFAULT_MIN_PERIOD = 2
    DEFAULT_MAX_PERIOD = 3
    DISABLE = 4
    DISABLE_TIMEOUT = 5
    NOTIFICATION_STORING = 6
    BINDING = 7
    REGISTRATION_UPDATE_TRIGGER = 8
    BOOTSTRAP_REQUEST_TRIGGER = 9
    APN_LINK = 10
    TLS_DTLS_ALERT_CODE = 11
    LAST_BOOTSTRAPPED = 12
    REGISTRATION_PRIORITY_ORDER = 13
    INITIAL_REGISTRATION_DELAY_TIMER = 14
    REGISTRATION_FAILURE_BLOCK = 15
    BOOTSTRAP_ON_REGISTRATION_FAILURE = 16
    COMMUNICATION_RETRY_COUNT = 17
    COMMUNICATION_RETRY_TIMER = 18
    COMMUNICATION_SEQUENCE_DELAY_TIMER = 19
    COMMUNICATION_SEQUENCE_RETRY_COUNT = 20
    TRIGGER = 21
    PREFERRED_TRANSPORT = 22
    MUTE_SEND = 23


class OscoreResource(IntEnum):
    """Resources of the OSCORE object ``/21`` (``LWM2M_OSCORE-v1_0_1.xml``; 6 from object 21 v2.0; ref. §2.3)."""

    MASTER_SECRET = 0
    SENDER_ID = 1
    RECIPIENT_ID = 2
    AEAD_ALGORITHM = 3
    HMAC_ALGORITHM = 4
    MASTER_SALT = 5
    ID_CONTEXT = 6


class SenmlLabel(IntEnum):
    """SenML CBOR map keys. RFC 8428 §6 Table 4 ("this table is conclusive": extensions use string keys)."""

    BVER = -1
    BN = -2
    BT = -3
    BU = -4
    BV = -5
    BS = -6
    N = 0
    U = 1
    V = 2
    VS = 3
    VB = 4
    S = 5
    T = 6
    UT = 7
    VD = 8
