# The layout `switchyard flags create-table` creates, for production: the flags table (one item
# per tenant plus the "#meta" version item), the audit table (one record per write, in the
# same transaction as the flag) and the fleet table (routers' presence records, which churn and
# expire by TTL).

locals {
  audit_table_name = "${var.table_name}-audit"
  fleet_table_name = "${var.table_name}-fleet"
  # Replicas need a stream of new and old images; a single-region table needs none.
  global = length(var.replica_regions) > 0
}

resource "aws_dynamodb_table" "flags" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "tenant"
  deletion_protection_enabled = var.deletion_protection
  stream_enabled              = local.global
  stream_view_type            = local.global ? "NEW_AND_OLD_IMAGES" : null

  attribute {
    name = "tenant"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  dynamic "replica" {
    for_each = var.replica_regions
    content {
      region_name            = replica.value
      point_in_time_recovery = true
    }
  }

  tags = var.tags
}

resource "aws_dynamodb_table" "audit" {
  name                        = local.audit_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "stream"
  range_key                   = "seq"
  deletion_protection_enabled = var.deletion_protection
  stream_enabled              = local.global
  stream_view_type            = local.global ? "NEW_AND_OLD_IMAGES" : null

  attribute {
    name = "stream"
    type = "S"
  }

  attribute {
    name = "seq"
    type = "N"
  }

  attribute {
    name = "tenant"
    type = "S"
  }

  attribute {
    name = "seal_shard"
    type = "S"
  }

  # A router starting with no snapshot reads the audited seals through this sparse index:
  # only records that seal a tenant or change a sealed one carry `seal_shard`.
  global_secondary_index {
    name               = "sealed"
    hash_key           = "seal_shard"
    range_key          = "seq"
    projection_type    = "INCLUDE"
    non_key_attributes = ["tenant", "new"]
  }

  # `switchyard flags history TENANT` reads one tenant's records through this index.
  global_secondary_index {
    name            = "by_tenant"
    hash_key        = "tenant"
    range_key       = "seq"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  dynamic "replica" {
    for_each = var.replica_regions
    content {
      region_name            = replica.value
      point_in_time_recovery = true
    }
  }

  tags = var.tags
}

# Routers' presence records (`switchyard fleet`): one item per router, rewritten every heartbeat
# and deleted at a clean shutdown; a router that vanished is swept by the TTL a day later. Never
# part of a flag write, so a heartbeat never bumps the flag version.
resource "aws_dynamodb_table" "fleet" {
  name                        = local.fleet_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection
  stream_enabled              = local.global
  stream_view_type            = local.global ? "NEW_AND_OLD_IMAGES" : null

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  dynamic "replica" {
    for_each = var.replica_regions
    content {
      region_name            = replica.value
      point_in_time_recovery = true
    }
  }

  tags = var.tags
}

# The store's identity, made once. Routers refuse a store whose identity changed (a
# recreated table) until an operator runs `switchyard flags adopt`.
resource "random_uuid" "store_id" {}

# The version item every write bumps and every router polls, with the store's identity.
# Created once at version 0; Terraform never writes it again (the store owns its value).
resource "aws_dynamodb_table_item" "meta" {
  table_name = aws_dynamodb_table.flags.name
  hash_key   = aws_dynamodb_table.flags.hash_key
  item = jsonencode({
    tenant   = { S = "#meta" }
    version  = { N = "0" }
    store_id = { S = replace(random_uuid.store_id.result, "-", "") }
  })

  lifecycle {
    ignore_changes = [item]
  }
}

# The identity again in the audit table, so `switchyard flags create-table` can rebuild a lost
# meta item with it (and the version from the audit stream) instead of starting over.
resource "aws_dynamodb_table_item" "identity" {
  table_name = aws_dynamodb_table.audit.name
  hash_key   = aws_dynamodb_table.audit.hash_key
  range_key  = aws_dynamodb_table.audit.range_key
  item = jsonencode({
    stream   = { S = "#identity" }
    seq      = { N = "0" }
    store_id = { S = replace(random_uuid.store_id.result, "-", "") }
  })

  lifecycle {
    ignore_changes = [item]
  }
}
