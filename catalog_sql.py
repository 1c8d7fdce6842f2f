"""Every catalog query, per flavour, in one place, so each can be parsed by a test and checked on a real cluster.

PostgreSQL 10+, Greenplum 7 and Cloudberry have `relispartition` and access methods; Greenplum 6 (PostgreSQL 9.4)
has neither, but `relstorage` and the legacy `pg_partition*` catalogs. The queries use only what their flavour has.
Parameters are psycopg2's `%(name)s` placeholders; no value is ever formatted into this text.
"""

# Relations: oid, schema, name, relkind, estimated rows, storage, distribution key, partition root, foreign server.
_RELATION_COLUMNS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.reltuples::float8,
       {storage} AS storage,
       {distribution} AS distributed_by,
       {partition_root} AS partition_root,
       (SELECT s.srvname::text FROM pg_catalog.pg_foreign_table ft
          JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = c.oid) AS foreign_server
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
{joins}
WHERE c.relkind IN ({relkinds})
  AND n.nspname <> ALL (%(system_schemas)s)
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND {hide_leaves}
ORDER BY n.nspname, c.relname
"""

RELATIONS_POSTGRES = _RELATION_COLUMNS.format(
    storage="CASE WHEN c.relkind = 'v' THEN 'virtual' ELSE COALESCE(am.amname::text, 'heap') END",
    distribution="NULL::text",
    partition_root="c.relkind = 'p'",
    joins="LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam",
    relkinds="'r', 'p', 'v', 'm', 'f'",
    hide_leaves="NOT c.relispartition",
)

# PostgreSQL before 10: no declarative partitions, no relispartition.
RELATIONS_POSTGRES_LEGACY = _RELATION_COLUMNS.format(
    storage="CASE WHEN c.relkind = 'v' THEN 'virtual' ELSE 'heap' END",
    distribution="NULL::text",
    partition_root="false",
    joins="",
    relkinds="'r', 'v', 'm', 'f'",
    hide_leaves="true",
)

RELATIONS_GREENPLUM7 = _RELATION_COLUMNS.format(
    storage="CASE WHEN c.relkind = 'v' THEN 'virtual' ELSE COALESCE(am.amname::text, 'heap') END",
    distribution="CASE WHEN c.relkind IN ('r', 'p', 'm') THEN pg_catalog.pg_get_table_distributedby(c.oid) END",
    partition_root="c.relkind = 'p'",
    joins="LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam",
    relkinds="'r', 'p', 'v', 'm', 'f'",
    hide_leaves="NOT c.relispartition",
)

# Greenplum 6: partition leaves (and middle levels) are children in pg_partition_rule; a root has a pg_partition row.
RELATIONS_GREENPLUM6 = _RELATION_COLUMNS.format(
    storage="""CASE c.relstorage WHEN 'h' THEN 'heap' WHEN 'a' THEN 'ao_row' WHEN 'c' THEN 'ao_column'
                WHEN 'x' THEN 'external' WHEN 'v' THEN 'virtual' WHEN 'f' THEN 'foreign' ELSE c.relstorage::text END""",
    distribution="""CASE WHEN c.relkind = 'r' AND c.relstorage <> 'x'
                     THEN pg_catalog.pg_get_table_distributedby(c.oid) END""",
    partition_root="EXISTS (SELECT 1 FROM pg_catalog.pg_partition p WHERE p.parrelid = c.oid)",
    joins="",
    relkinds="'r', 'v', 'm', 'f'",
    hide_leaves="c.oid NOT IN (SELECT r.parchildrelid FROM pg_catalog.pg_partition_rule r)",
)

# External and foreign tables hiding as leaves of a partitioned root would be read through the root: list them per
# root. Greenplum 6 legacy partitions: external tables (relstorage 'x') exchanged in, or foreign ones.
EXTERNAL_LEAVES_GREENPLUM6 = """
SELECT p.parrelid, r.parchildrelid::regclass::text
FROM pg_catalog.pg_partition p
JOIN pg_catalog.pg_partition_rule r ON r.paroid = p.oid
JOIN pg_catalog.pg_class c ON c.oid = r.parchildrelid
WHERE p.parrelid = ANY (%(oids)s::oid[]) AND (c.relstorage IN ('x', 'f') OR c.relkind = 'f')
"""

# PostgreSQL, Greenplum 7 and Cloudberry: any foreign-table leaf, whatever its server (gp_exttable_server for
# Greenplum's external tables, postgres_fdw, PXF, file_fdw, ...).
_PARTITION_TREE = """
WITH RECURSIVE tree(root, relid) AS (
    SELECT c.oid, c.oid FROM pg_catalog.pg_class c WHERE c.oid = ANY (%(oids)s::oid[])
    UNION ALL
    SELECT tree.root, i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid
)
"""

FOREIGN_LEAVES = (
    _PARTITION_TREE
    + """
SELECT tree.root, c.oid::regclass::text
FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid
WHERE c.relkind = 'f'
"""
)

# Estimated rows of partitioned roots: the sum over the leaves. PostgreSQL 14+ (Cloudberry's bases) also keeps an
# ANALYZE estimate on the partitioned root and middle levels (relkind 'p'): counting those too would double it.
PARTITION_ROW_ESTIMATES = (
    _PARTITION_TREE
    + """
SELECT tree.root, sum(GREATEST(c.reltuples, 0))::float8
FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid
WHERE c.relkind <> 'p'
GROUP BY tree.root
"""
)

# Greenplum 6 without a recursive query (gp_recursive_cte may be off): every level of a legacy partition tree names
# the root in pg_partition.parrelid, and middle levels hold no rows.
PARTITION_ROW_ESTIMATES_GREENPLUM6 = """
SELECT p.parrelid, sum(GREATEST(c.reltuples, 0))::float8
FROM pg_catalog.pg_partition p
JOIN pg_catalog.pg_partition_rule r ON r.paroid = p.oid
JOIN pg_catalog.pg_class c ON c.oid = r.parchildrelid
WHERE p.parrelid = ANY (%(oids)s::oid[])
GROUP BY p.parrelid
"""

COLUMNS = """
SELECT a.attrelid, a.attname, a.atttypid, a.atttypmod, a.attnotnull,
       pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT')
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# The types of the given oids, and every domain (a domain may sit on another domain).
TYPES = """
SELECT t.oid, t.typname, t.typtype::text, t.typcategory::text, t.typbasetype, t.typtypmod
FROM pg_catalog.pg_type t
WHERE t.oid = ANY (%(oids)s::oid[]) OR t.typtype = 'd'
"""

# Primary keys and unique indexes usable as keys: no predicate, no expression, valid.
KEYS = """
SELECT i.indrelid, i.indisprimary, ic.relname,
       ARRAY(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.position) AS columns,
       NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
         AS all_not_null
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY (%(oids)s::oid[])
  AND (i.indisprimary OR i.indisunique)
  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indisvalid
"""

# Whether a column leads some index, so an incremental read on it is not a full scan.
INDEXED_LEADING_COLUMNS = """
SELECT i.indrelid, a.attname::text
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = ANY (%(oids)s::oid[])
"""

# Greenplum's primary segments: a keyless table is read one segment at a time, each part resumable on its own.
PRIMARY_SEGMENTS = """
SELECT content FROM pg_catalog.gp_segment_configuration WHERE role = 'p' AND content >= 0 ORDER BY content
"""

# Schemas the user may use, with a table or not: a schema in SCHEMAS with no table yet is no typo.
SCHEMAS = """
SELECT n.nspname FROM pg_catalog.pg_namespace n
WHERE n.nspname <> ALL (%(system_schemas)s) AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
"""

# The leaves a full pass reads again, by oid: read through their own names when the user may.
LEAF_NAMES = """
SELECT c.oid, n.nspname, c.relname, pg_catalog.has_table_privilege(c.oid, 'SELECT')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY (%(oids)s::oid[])
"""

# The leaves of Greenplum tables that a full pass reads, with their storage and file number (a new one after TRUNCATE
# or a rewriting ALTER TABLE): legacy partitions' leaves are the rules no other rule has as parent; a table that is
# not partitioned is its own leaf.
LEAVES_GREENPLUM6 = """
SELECT c.oid, n.nspname, c.relname, pg_catalog.has_table_privilege(c.oid, 'SELECT'),
       CASE c.relstorage WHEN 'h' THEN 'heap' WHEN 'a' THEN 'ao_row' WHEN 'c' THEN 'ao_column'
            ELSE c.relstorage::text END,
       c.relfilenode::bigint
FROM pg_catalog.pg_partition p
JOIN pg_catalog.pg_partition_rule r ON r.paroid = p.oid
JOIN pg_catalog.pg_class c ON c.oid = r.parchildrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE p.parrelid = %(root)s
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_rule child WHERE child.parparentrule = r.oid)
UNION ALL
SELECT c.oid, n.nspname, c.relname, true,
       CASE c.relstorage WHEN 'h' THEN 'heap' WHEN 'a' THEN 'ao_row' WHEN 'c' THEN 'ao_column'
            ELSE c.relstorage::text END,
       c.relfilenode::bigint
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %(root)s AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition p WHERE p.parrelid = c.oid)
"""

# A table and, when it is partitioned, every partition under it (not the children of a plain INHERITS parent, which is
# read with FROM ONLY).
_PARTITIONS_OF_ROOT = """
WITH RECURSIVE tree(relid) AS (
    SELECT %(root)s::oid
    UNION ALL
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid
    JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
    WHERE parent.relkind = 'p'
)
"""

LEAVES_GREENPLUM7 = (
    _PARTITIONS_OF_ROOT
    + """SELECT c.oid, n.nspname, c.relname, pg_catalog.has_table_privilege(c.oid, 'SELECT'),
       COALESCE(am.amname::text, 'heap'), c.relfilenode::bigint
FROM tree
JOIN pg_catalog.pg_class c ON c.oid = tree.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind NOT IN ('p', 'f')
"""
)

# The blocks of a table's leaves (over all segments on Greenplum), which decide the size of its block ranges.
TABLE_BLOCKS = (
    _PARTITIONS_OF_ROOT
    + """SELECT COALESCE(sum(pg_catalog.pg_relation_size(c.oid)), 0)::bigint / current_setting('block_size')::bigint
FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid
WHERE c.relkind NOT IN ('p', 'f', 'v')
"""
)

TABLE_BLOCKS_GREENPLUM6 = """
SELECT COALESCE(sum(pg_catalog.pg_relation_size(leaf)), 0)::bigint / current_setting('block_size')::bigint
FROM (SELECT r.parchildrelid AS leaf
      FROM pg_catalog.pg_partition p JOIN pg_catalog.pg_partition_rule r ON r.paroid = p.oid
      WHERE p.parrelid = %(root)s
      UNION ALL
      SELECT %(root)s::oid WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition p WHERE p.parrelid = %(root)s)
     ) AS leaves
"""

# Append-optimized leaves: each segment file's tuples written and modification count. Greenplum 6's coordinator holds
# each file's totals over all segments (one row per column of a column-oriented file: column 0 stands for them all);
# its modification count grows with every insert, update and delete, where a segment's does not count deletes.
AO_SEGMENT_FILES_GREENPLUM6 = """
SELECT files.oid, (files.f).segno, (files.f).tupcount, (files.f).modcount
FROM (SELECT c.oid, gp_toolkit.__gp_aoseg(c.oid) AS f FROM pg_catalog.pg_class c
      WHERE c.oid = ANY (%(row_oriented)s::oid[])) AS files
UNION ALL
SELECT files.oid, (files.f).segno, (files.f).tupcount, (files.f).modcount
FROM (SELECT c.oid, gp_toolkit.__gp_aocsseg(c.oid) AS f FROM pg_catalog.pg_class c
      WHERE c.oid = ANY (%(column_oriented)s::oid[])) AS files
WHERE (files.f).column_num = 0
"""

# Greenplum 7 and Cloudberry declare these functions EXECUTE ON ALL SEGMENTS: each call answers for every segment (no
# coordinator totals), and one leaf at a time. A segment's modification count misses deletes: its hidden rows count
# them. Columns are selected by name, as they differ between versions.
_AO_SEGMENT_FILES_GREENPLUM7 = """
SELECT files.segno, sum(files.tupcount)::bigint, sum(files.modcount)::bigint
FROM gp_toolkit.{function}(%(leaf)s::regclass) AS files
WHERE {files}
GROUP BY files.segno
"""
AO_SEGMENT_FILES_GREENPLUM7_ROW = _AO_SEGMENT_FILES_GREENPLUM7.format(function="__gp_aoseg", files="true")
AO_SEGMENT_FILES_GREENPLUM7_COLUMN = _AO_SEGMENT_FILES_GREENPLUM7.format(
    function="__gp_aocsseg", files="files.column_num = 0"
)
AO_HIDDEN_TOTALS_GREENPLUM7 = """
SELECT hidden.segno, sum(hidden.hidden_tupcount)::bigint
FROM gp_toolkit.__gp_aovisimap_hidden_info(%(leaf)s::regclass) AS hidden
GROUP BY hidden.segno
"""
AO_HIDDEN_COUNTS_GREENPLUM7 = """
SELECT hidden.segment_id, hidden.segno, hidden.hidden_tupcount::bigint
FROM gp_toolkit.__gp_aovisimap_hidden_info(%(leaf)s::regclass) AS hidden
"""

# Rows hidden in an append-optimized leaf (deleted, or the old version of an updated row), per segment: the
# visibility map's entries, read on every segment. Read to the end: stopping early leaks buffers on Greenplum 6.
AO_HIDDEN_ROWS = """
SELECT hidden.gp_segment_id, (hidden.v).segno, (hidden.v).row_num
FROM (SELECT gp_segment_id, gp_toolkit.__gp_aovisimap(%(leaf)s::regclass) AS v
      FROM gp_dist_random('gp_id')) AS hidden
"""

# How many rows are hidden per segment and segment file (Greenplum 6).
AO_HIDDEN_COUNTS_GREENPLUM6 = """
SELECT counts.gp_segment_id, (counts.v).segno, (counts.v).hidden_tupcount
FROM (SELECT gp_segment_id, gp_toolkit.__gp_aovisimap_hidden_info(%(leaf)s::regclass) AS v
      FROM gp_dist_random('gp_id')) AS counts
"""

COLUMN_EXISTS = """
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = %(relation)s::regclass AND attname = %(column)s AND NOT attisdropped)
"""

GREENPLUM_ONLY = (
    TABLE_BLOCKS_GREENPLUM6,
    LEAVES_GREENPLUM6,
    LEAVES_GREENPLUM7,
    AO_SEGMENT_FILES_GREENPLUM6,
    AO_SEGMENT_FILES_GREENPLUM7_ROW,
    AO_SEGMENT_FILES_GREENPLUM7_COLUMN,
    AO_HIDDEN_TOTALS_GREENPLUM7,
    AO_HIDDEN_COUNTS_GREENPLUM7,
    AO_HIDDEN_ROWS,
    AO_HIDDEN_COUNTS_GREENPLUM6,
    RELATIONS_GREENPLUM6,
    RELATIONS_GREENPLUM7,
    EXTERNAL_LEAVES_GREENPLUM6,
    PARTITION_ROW_ESTIMATES_GREENPLUM6,
    PRIMARY_SEGMENTS,
)
