# Four policies: routers only read the flags and keep their own presence record in the fleet
# table; operators (the CLI, and a router that serves admin writes) read and write flags and
# append audit records; scheduled jobs (`switchyard owns`, `switchyard jobs run`) read the
# flags and take, renew and release their leases, items of the fleet table keyed `lease#...`;
# ramp drivers (routers with `[fleet] drive_ramps`) write flags as operators do and hold a
# ramp's lease. None may delete flags, audit records or tables.

locals {
  # Every region's copy of each table (a replica has the same name in its own region).
  flags_arns = [for r in concat([data.aws_region.current.name], var.replica_regions) :
  "arn:${data.aws_partition.current.partition}:dynamodb:${r}:${data.aws_caller_identity.current.account_id}:table/${var.table_name}"]
  audit_arns = [for r in concat([data.aws_region.current.name], var.replica_regions) :
  "arn:${data.aws_partition.current.partition}:dynamodb:${r}:${data.aws_caller_identity.current.account_id}:table/${local.audit_table_name}"]
  audit_index_arns = [for a in local.audit_arns : "${a}/index/by_tenant"]
  seal_index_arns  = [for a in local.audit_arns : "${a}/index/sealed"]
  fleet_arns = [for r in concat([data.aws_region.current.name], var.replica_regions) :
  "arn:${data.aws_partition.current.partition}:dynamodb:${r}:${data.aws_caller_identity.current.account_id}:table/${local.fleet_table_name}"]
}

data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "router" {
  statement {
    sid = "PollAndLoadFlags"
    # GetItem: the #meta version poll; Scan: the cold-start load (parallel segments).
    actions   = ["dynamodb:GetItem", "dynamodb:Scan"]
    resources = local.flags_arns
  }

  statement {
    sid = "ReadChanges"
    # Query of the audit stream after the last version seen: reads proportional to the change.
    # At a start with no snapshot, Query of the sparse `sealed` index: the audited seals.
    actions   = ["dynamodb:Query"]
    resources = concat(local.audit_arns, local.seal_index_arns)
  }

  statement {
    sid = "KeepPresence"
    # The router's presence record: PutItem every heartbeat, DeleteItem at a clean shutdown,
    # Scan for `switchyard fleet`.
    actions   = ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Scan"]
    resources = local.fleet_arns
  }
}

data "aws_iam_policy_document" "operator" {
  source_policy_documents = [data.aws_iam_policy_document.router.json]

  statement {
    sid = "WriteFlags"
    # A write is one TransactWriteItems: UpdateItem on #meta, PutItem on the flag, both
    # conditional. IAM authorises each item action of the transaction.
    # BatchGetItem: the items a batch or a ramp is about to write, read first.
    actions = [
      "dynamodb:GetItem",
      "dynamodb:BatchGetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:ConditionCheckItem",
    ]
    resources = local.flags_arns
  }

  statement {
    sid = "AppendAudit"
    # Audit records are only ever added (conditional on the sequence number being new).
    actions   = ["dynamodb:PutItem"]
    resources = local.audit_arns
  }

  statement {
    sid       = "ReadHistory"
    actions   = ["dynamodb:Query"]
    resources = local.audit_index_arns
  }

  statement {
    sid    = "NeverDelete"
    effect = "Deny"
    actions = [
      "dynamodb:DeleteItem",
      "dynamodb:DeleteTable",
      "dynamodb:UpdateTable",
      "dynamodb:BatchWriteItem",
    ]
    resources = concat(local.flags_arns, local.audit_arns)
  }
}

# Leases (a job's, a ramp's driver's) are items of the fleet table keyed `lease#...`, taken,
# renewed and released by conditional UpdateItem; GetItem reads one.
data "aws_iam_policy_document" "leases" {
  statement {
    sid       = "KeepLeases"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = local.fleet_arns
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["lease#*"]
    }
  }
}

data "aws_iam_policy_document" "jobs" {
  source_policy_documents = [data.aws_iam_policy_document.leases.json]

  statement {
    sid = "ReadOwners"
    # GetItem: a tenant's flag (and the `*` flag); Scan: `owns --list`.
    actions   = ["dynamodb:GetItem", "dynamodb:Scan"]
    resources = local.flags_arns
  }
}

# One router drives a ramp at a time, under a lease (`lease#ramp#ID`).
data "aws_iam_policy_document" "ramp_driver" {
  source_policy_documents = [
    data.aws_iam_policy_document.operator.json,
    data.aws_iam_policy_document.leases.json,
  ]
}

resource "aws_iam_policy" "ramp_driver" {
  name        = "${var.table_name}-ramp-driver"
  description = "Switchyard routers that drive ramps: conditional, audited flag writes to ${var.table_name}; ramp leases; no deletes."
  policy      = data.aws_iam_policy_document.ramp_driver.json
  tags        = var.tags
}

resource "aws_iam_policy" "router" {
  name        = "${var.table_name}-router-read"
  description = "Switchyard routers: read the flag table ${var.table_name} and its audit stream; keep a presence record."
  policy      = data.aws_iam_policy_document.router.json
  tags        = var.tags
}

resource "aws_iam_policy" "operator" {
  name        = "${var.table_name}-operator-write"
  description = "Switchyard operators: conditional, audited flag writes to ${var.table_name}; no deletes."
  policy      = data.aws_iam_policy_document.operator.json
  tags        = var.tags
}

resource "aws_iam_policy" "jobs" {
  name        = "${var.table_name}-jobs"
  description = "Switchyard scheduled jobs: read who owns a tenant in ${var.table_name}; take and renew job leases."
  policy      = data.aws_iam_policy_document.jobs.json
  tags        = var.tags
}
