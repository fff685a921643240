output "store_url" {
  description = "The `[flags] source` for routers in this region."
  value       = "dynamodb://${aws_dynamodb_table.flags.name}?region=${data.aws_region.current.name}"
}

output "flags_table_arn" {
  value = aws_dynamodb_table.flags.arn
}

output "audit_table_arn" {
  value = aws_dynamodb_table.audit.arn
}

output "router_policy_arn" {
  description = "Attach to the routers' role: read-only on the flags, plus each router's presence record."
  value       = aws_iam_policy.router.arn
}

output "operator_policy_arn" {
  description = "Attach to operators' roles (and a router that serves admin writes)."
  value       = aws_iam_policy.operator.arn
}

output "fleet_table_arn" {
  description = "Routers' presence records (TTL on expires_at)."
  value       = aws_dynamodb_table.fleet.arn
}

output "ramp_driver_policy_arn" {
  description = "Attach to routers that drive ramps (`[fleet] drive_ramps`, the default) instead of router_policy_arn: they write the ramped tenants' flags."
  value       = aws_iam_policy.ramp_driver.arn
}

output "jobs_policy_arn" {
  description = "Attach to scheduled jobs' roles (`switchyard owns`, `switchyard jobs run`): read the flags, keep job leases."
  value       = aws_iam_policy.jobs.arn
}
