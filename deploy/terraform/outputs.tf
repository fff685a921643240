output "store_url" {
  description = "The flag store as operators write it (the primary region)."
  value       = module.flag_store.store_url
}

output "operator_policy_arn" {
  description = "Attach to operators' roles."
  value       = module.flag_store.operator_policy_arn
}

output "balancers" {
  description = "Each region's balancer: where DNS sends that region's clients."
  value = {
    (var.primary_region)   = module.router_primary.balancer_dns_name
    (var.secondary_region) = module.router_secondary.balancer_dns_name
  }
}

output "ramp_driver_policy_arn" {
  description = "Attach to routers that drive ramps instead of router_policy_arn (or set `[fleet] drive_ramps = false` on them)."
  value       = module.flag_store.ramp_driver_policy_arn
}

output "jobs_policy_arn" {
  description = "Attach to scheduled jobs' roles on both sides; point them at store_url, so every side's leases live in one region."
  value       = module.flag_store.jobs_policy_arn
}
