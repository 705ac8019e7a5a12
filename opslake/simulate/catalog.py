"""Reference data of the simulated province: object types, departments, businesses, places."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TypeSpec:
    """One type of configuration item: its S4 kind, id prefix, share of the estate, exporter."""

    kind: str
    prefix: str
    share: float
    port: int
    job: str
    software: bool  # carries a licence end date
    vendors: tuple[tuple[str, str], ...]


# Shares are of the requested entity count; "vm" takes whatever is left so the total matches.
TYPES: dict[str, TypeSpec] = {
    "rack": TypeSpec(
        "facility",
        "rack",
        0.03,
        9116,
        "snmp",
        False,
        (("Huawei", "FusionModule2000"), ("Vertiv", "VR3100")),
    ),
    "pdu": TypeSpec(
        "facility", "pdu", 0.03, 9116, "snmp", False, (("Vertiv", "MPH2"), ("Huawei", "iPDU-32A"))
    ),
    "ups": TypeSpec(
        "facility",
        "ups",
        0.01,
        9116,
        "snmp",
        False,
        (("KSTAR", "YDC3380"), ("Huawei", "UPS5000-E")),
    ),
    "cooling": TypeSpec(
        "facility",
        "crac",
        0.01,
        9116,
        "snmp",
        False,
        (("Envicool", "XRow-25"), ("Vertiv", "Liebert CRV")),
    ),
    "host": TypeSpec(
        "cloud",
        "host",
        0.07,
        9100,
        "node",
        False,
        (
            ("Inspur", "NF5280M6"),
            ("Huawei", "TaiShan 200"),
            ("Sugon", "R620-G30"),
            ("H3C", "UniServer R4900 G5"),
        ),
    ),
    "vm": TypeSpec(
        "cloud", "vm", 0.0, 9100, "node", False, (("Huawei", "FusionCompute VM"), ("H3C", "CAS VM"))
    ),
    "container": TypeSpec(
        "cloud",
        "ctr",
        0.12,
        8080,
        "cadvisor",
        False,
        (("Huawei", "CCE Pod"), ("KubeSphere", "Pod")),
    ),
    "storage": TypeSpec(
        "cloud",
        "storage",
        0.02,
        9200,
        "storage",
        False,
        (("Huawei", "OceanStor 5510"), ("Inspur", "AS5600G5")),
    ),
    "switch": TypeSpec(
        "cloud",
        "sw",
        0.03,
        9116,
        "snmp",
        False,
        (("H3C", "S6850-56HF"), ("Huawei", "CE6881-48S6CQ"), ("Ruijie", "RG-S6510")),
    ),
    "app": TypeSpec(
        "application",
        "app",
        0.04,
        8080,
        "app",
        True,
        (("Neusoft", "GovPortal"), ("Digital China", "eGov Suite"), ("Inspur", "Inspur GS")),
    ),
    "svc": TypeSpec(
        "application",
        "svc",
        0.10,
        8080,
        "app",
        True,
        (("Neusoft", "GovPortal"), ("Digital China", "eGov Suite"), ("Inspur", "Inspur GS")),
    ),
    "db": TypeSpec(
        "platform",
        "db",
        0.04,
        9104,
        "db",
        True,
        (
            ("Dameng", "DM8"),
            ("Kingbase", "KingbaseES V8"),
            ("Oracle", "MySQL 8.0"),
            ("OceanBase", "OceanBase 4.2"),
        ),
    ),
    "middleware": TypeSpec(
        "platform",
        "mw",
        0.02,
        9404,
        "middleware",
        True,
        (("TongTech", "TongWeb 7"), ("Apusic", "AAS 10"), ("BES", "BES Application Server 9.5")),
    ),
    "queue": TypeSpec(
        "platform",
        "mq",
        0.015,
        9419,
        "queue",
        True,
        (("TongTech", "TongLINK/Q 8"), ("Apache", "RocketMQ 5"), ("Apache", "Kafka 3.6")),
    ),
    "identity": TypeSpec(
        "platform",
        "idp",
        0.01,
        9000,
        "identity",
        True,
        (("Bamboocloud", "BambooIAM"), ("Keycloak", "Keycloak 22")),
    ),
    "firewall": TypeSpec(
        "security",
        "fw",
        0.015,
        9116,
        "snmp",
        True,
        (("Hillstone", "SG-6000-E6360"), ("Huawei", "USG6650E"), ("Sangfor", "AF-2000")),
    ),
    "waf": TypeSpec(
        "security",
        "waf",
        0.01,
        9116,
        "snmp",
        True,
        (("Chaitin", "SafeLine"), ("NSFOCUS", "WAF NF-2000")),
    ),
    "ids": TypeSpec(
        "security",
        "ids",
        0.01,
        9116,
        "snmp",
        True,
        (("NSFOCUS", "NIDS NX3"), ("QiAnXin", "TianYan")),
    ),
    "bastion": TypeSpec(
        "security",
        "bastion",
        0.01,
        9100,
        "node",
        True,
        (("QiAnXin", "OSM"), ("JumpServer", "JumpServer v3")),
    ),
}

#: Private address block per type, so an IP says what it belongs to.
IP_BLOCK = {
    "rack": 10,
    "pdu": 11,
    "ups": 12,
    "cooling": 13,
    "host": 20,
    "storage": 21,
    "switch": 1,
    "vm": 30,
    "container": 40,
    "db": 50,
    "middleware": 51,
    "queue": 52,
    "identity": 53,
    "app": 60,
    "svc": 61,
    "firewall": 2,
    "waf": 3,
    "ids": 4,
    "bastion": 5,
}

#: The operating department of shared infrastructure (the province's big-data bureau).
PLATFORM_DEPARTMENT = "大数据局"


@dataclass(frozen=True)
class Business:
    """A government business line: readable slug, Chinese name, owning department."""

    slug: str
    name: str
    department: str


BUSINESSES = (
    Business("tax", "电子税务", "税务局"),
    Business("social", "社保服务", "人社厅"),
    Business("govportal", "政务服务网", "大数据局"),
    Business("healthcode", "健康码", "卫健委"),
    Business("police", "户政服务", "公安厅"),
    Business("medins", "医保服务", "医保局"),
    Business("housing", "住房公积金", "住建厅"),
    Business("market", "市场监管", "市场监管局"),
    Business("edu", "教育服务", "教育厅"),
    Business("transport", "交通出行", "交通运输厅"),
    Business("civil", "民政服务", "民政厅"),
    Business("hospital", "互联网医院", "卫健委"),
    Business("ecology", "生态环境", "生态环境厅"),
    Business("emergency", "应急管理", "应急管理厅"),
    Business("finance", "财政预算", "财政厅"),
    Business("oa", "协同办公", "办公厅"),
)

#: Application name suffixes, in the order a business gets its applications.
APP_SUFFIXES = (
    "portal",
    "mobile",
    "admin",
    "gateway",
    "report",
    "data",
    "notify",
    "search",
    "sign",
    "pay",
)
SERVICE_SUFFIXES = ("api", "web", "worker", "auth", "file", "search")


@dataclass(frozen=True)
class Location:
    """A data-centre room: city (region), short code used in device names, room name."""

    region: str
    code: str
    name: str


LOCATIONS = (
    Location("杭州市", "HZA", "省政务云主中心A区机房"),
    Location("杭州市", "HZB", "省政务云主中心B区机房"),
    Location("宁波市", "NBA", "省政务云灾备中心机房"),
    Location("温州市", "WZA", "温州市政务云机房"),
    Location("嘉兴市", "JXA", "嘉兴市政务云机房"),
    Location("绍兴市", "SXA", "绍兴市政务云机房"),
    Location("金华市", "JHA", "金华市政务云机房"),
    Location("台州市", "TZA", "台州市政务云机房"),
)

OWNERS = (
    "张伟",
    "王芳",
    "李娜",
    "刘洋",
    "陈静",
    "杨磊",
    "赵敏",
    "黄强",
    "周杰",
    "吴婷",
    "徐斌",
    "孙丽",
    "马超",
    "朱琳",
    "胡军",
    "郭燕",
    "何平",
    "高翔",
    "林峰",
    "罗红",
    "郑凯",
    "梁爽",
    "谢涛",
    "宋佳",
)
PHONE_PREFIXES = ("138", "139", "137", "136", "135", "150", "186", "188", "133", "177")

ASSIGNEE_GROUP = {
    "facility": "机房动力组",
    "cloud": "云平台组",
    "application": "应用运维组",
    "platform": "数据库与中间件组",
    "security": "网络安全组",
}
SERVICE_DESK = "服务台"

#: Hosts that send syslog but are not in the CMDB (kept and counted, mapped to no entity).
UNKNOWN_HOSTS = ("legacy-oa-01", "10.99.7.23", "test-vm-tmp", "sw-unregistered-07")
