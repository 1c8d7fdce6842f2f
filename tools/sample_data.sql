-- A small, realistic schema for the demo (in schema shop, created by the caller): one table per sync strategy
-- and a mix of types.

-- A key and an updated_at column: synced incrementally.
CREATE TABLE shop.customers (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    country    char(2),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX customers_updated_at ON shop.customers (updated_at);
INSERT INTO shop.customers
SELECT i, 'Customer ' || i, 'customer' || i || '@example.com', (ARRAY['DE', 'FR', 'US', 'JP'])[1 + i % 4],
       timestamptz '2024-01-01 00:00:00+00' + i * interval '37 minutes',
       timestamptz '2024-06-01 00:00:00+00' + (i % 500) * interval '1 hour'
FROM generate_series(1, 2000) AS i;

-- A key and no cursor column: re-read in full every sync, deletions detected.
CREATE TABLE shop.products (
    sku      text PRIMARY KEY,
    title    text NOT NULL,
    price    numeric(10, 2) NOT NULL,
    in_stock boolean NOT NULL DEFAULT true
);
INSERT INTO shop.products
SELECT 'SKU-' || lpad(i::text, 5, '0'), 'Product ' || i, round((i * 1.37)::numeric, 2), i % 7 <> 0
FROM generate_series(1, 300) AS i;

-- Neither a key nor a cursor: mirrored every sync; identical rows stay distinct.
CREATE TABLE shop.page_views (
    url       text NOT NULL,
    viewed_on date NOT NULL,
    seconds   integer
);
INSERT INTO shop.page_views
SELECT '/products/' || (i % 50), date '2024-06-01' + (i % 30), i % 3
FROM generate_series(1, 5000) AS i;

-- Numeric, JSON, binary and array values.
CREATE TABLE shop.orders (
    id          integer PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers,
    total       numeric(12, 2) NOT NULL,
    exchange    numeric,
    ratio       double precision,
    details     jsonb,
    receipt     bytea,
    tags        text[],
    ordered_at  timestamp NOT NULL,
    delivery    interval,
    modified_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO shop.orders
SELECT i, 1 + i % 2000, round((i * 3.1)::numeric, 2), 1.0 / (1 + i % 9), i / 7.0,
       jsonb_build_object('items', i % 5 + 1, 'gift', i % 11 = 0, 'note', 'order ' || i),
       decode(md5(i::text), 'hex'), ARRAY['web', CASE WHEN i % 2 = 0 THEN 'promo' END],
       timestamp '2024-05-01 08:00:00' + i * interval '13 minutes', (i % 5) * interval '1 day 2 hours',
       timestamptz '2024-07-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 3000) AS i;
