"""CMDB domain: configuration items and topology, with their validity history (S5.2c)."""

import dagster as dg

from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import OWNER, daily_table_asset, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.ingest.parsers import cmdb as parser
from opslake.kpi.ledger import ledger
from opslake.kpi.topology import GOLD_RELATIONS_SCHEMA, described_relations
from opslake.lake.cmdb import cmdb_as_of, end_of_day, relations_as_of
from opslake.lake.schemas import ASSETS, RELATIONS_SCHEMA
from opslake.security.fields import OWNER_CONTACT
from opslake.transforms import cmdb as conform

CMDB = SourceSpec(
    source="cmdb",
    title="CMDB exports (configuration items and relations, one JSON snapshot per export)",
    fmt="json",
    bronze=[
        BronzeTable(
            "cmdb_cis",
            parser.parse,
            parser.BRONZE_SCHEMA,
            "One row per configuration item per snapshot, as exported, except that "
            "the owner's contact is kept only as an SM4 token (owner_contact_sm4).",
            sealed=True,
        ),
        BronzeTable(
            "cmdb_relations",
            parser.parse_relations,
            parser.RELATIONS_BRONZE_SCHEMA,
            "One row per relation (src, relation, dst) per snapshot, as exported.",
        ),
    ],
)

_SNAPSHOT_NOTE = (
    " Snapshot-partitioned: partition D holds the whole validity history as of the end of D, "
    "rebuilt from every CMDB snapshot up to D; read the latest partition, never a union."
)

ASSETS_SPEC = SilverTable(
    name="assets",
    bronze="cmdb_cis",
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=ASSETS,
    conform=lambda bronze, _resolver: conform.to_silver_assets(bronze),
    history=True,
    resolves_entities=False,
    sealed={"owner_contact_sm4": OWNER_CONTACT},
    description=(
        "Every managed object of the five kinds (facility, cloud, application, platform, "
        "security) with department, business, region, vendor, lifecycle, warranty, contract "
        "and licence dates, and owner (the owner's contact only as an SM4 token, "
        "owner_contact_sm4); one row per version with valid_from / valid_to." + _SNAPSHOT_NOTE
    ),
)

RELATIONS_SPEC = SilverTable(
    name="relations",
    bronze="cmdb_relations",
    bronze_schema=parser.RELATIONS_BRONZE_SCHEMA,
    schema=RELATIONS_SCHEMA,
    conform=lambda bronze, _resolver: conform.to_silver_relations(bronze),
    history=True,
    resolves_entities=False,
    description=(
        "The topology: runs_on, depends_on, belongs_to, located_in, powered_by edges between "
        "entities, one row per validity interval." + _SNAPSHOT_NOTE
    ),
)


@dg.asset(
    key=key("gold", "asset_ledger"),
    group_name="gold",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[key("silver", "assets")],
    description=(
        "资源台账 / asset ledger: every CI in service at the end of the day with department, "
        "business, location, vendor, model, lifecycle, and days left until its warranty, "
        "support contract and licence end (negative once past). The owner's contact is kept "
        "only as the SM4 token silver carries (owner_contact_sm4); the API decrypts it for "
        "roles allowed to see personal data."
    ),
)
def asset_ledger(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The day's ledger; owner contacts stay the SM4 tokens sealed when bronze parsed them."""
    lk, dt = lake.lake(), context.partition_key
    table = ledger(cmdb_as_of(lk, dt), end_of_day(dt))
    lk.write_table(table, "gold", "asset_ledger", {"dt": dt})
    expired = sum(1 for d in table["days_to_warranty_end"].to_pylist() if d is not None and d < 0)
    return dg.MaterializeResult(metadata={"rows": table.num_rows, "expired_warranties": expired})


gold_relations = daily_table_asset(
    "gold",
    "relations",
    deps=[key("silver", "relations"), key("silver", "assets")],
    schema=GOLD_RELATIONS_SCHEMA,
    build=lambda lk, dt, _metadata: described_relations(
        relations_as_of(lk, dt), cmdb_as_of(lk, dt)
    ),
    description=(
        "The topology as known at the end of the day: every edge version (valid_from / "
        "valid_to, null while current) with both ends' kind, type, name, department and "
        'business, so a question "as of a time" and a department\'s part of the graph are '
        "one filter each." + _SNAPSHOT_NOTE
    ),
)

defs = dg.Definitions(
    assets=[
        *source_assets(CMDB),
        silver_asset(ASSETS_SPEC),
        silver_asset(RELATIONS_SPEC),
        asset_ledger,
        gold_relations,
    ],
)
