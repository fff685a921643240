# Switchyard in two regions: the flag tables once (a global table, written in the primary
# region, replicated to the secondary), and the same router-service module called once per
# region with that region's provider. Each region's routers read their local replica.
#
#   terraform apply -var image=... -var-file=prod.tfvars   (networks, targets, default_target)

provider "aws" {
  alias  = "primary"
  region = var.primary_region
}

provider "aws" {
  alias  = "secondary"
  region = var.secondary_region
}

module "flag_store" {
  source    = "./modules/flag-store"
  providers = { aws = aws.primary }

  table_name      = var.table_name
  replica_regions = [var.secondary_region]
  tags            = var.tags
}

locals {
  # The router config for a region: its local replica, the shared targets and rules.
  router_toml = { for region in [var.primary_region, var.secondary_region] : region => templatefile("${path.module}/router.toml.tftpl", {
    region         = region
    store_url      = "dynamodb://${var.table_name}?region=${region}"
    default_target = var.default_target
    tenant_from    = var.tenant_from
    targets        = var.targets
    tls            = var.networks[region].tls_secret_arns != null
  }) }
}

module "router_primary" {
  source    = "./modules/router-service"
  providers = { aws = aws.primary }

  image               = var.image
  router_toml         = local.router_toml[var.primary_region]
  router_policy_arn   = module.flag_store.router_policy_arn
  vpc_id              = var.networks[var.primary_region].vpc_id
  private_subnet_ids  = var.networks[var.primary_region].private_subnet_ids
  balancer_subnet_ids = var.networks[var.primary_region].balancer_subnet_ids
  monitoring_cidrs    = var.networks[var.primary_region].monitoring_cidrs
  tls_secret_arns     = var.networks[var.primary_region].tls_secret_arns
  tags                = var.tags
}

module "router_secondary" {
  source    = "./modules/router-service"
  providers = { aws = aws.secondary }

  image               = var.image
  router_toml         = local.router_toml[var.secondary_region]
  router_policy_arn   = module.flag_store.router_policy_arn
  vpc_id              = var.networks[var.secondary_region].vpc_id
  private_subnet_ids  = var.networks[var.secondary_region].private_subnet_ids
  balancer_subnet_ids = var.networks[var.secondary_region].balancer_subnet_ids
  monitoring_cidrs    = var.networks[var.secondary_region].monitoring_cidrs
  tls_secret_arns     = var.networks[var.secondary_region].tls_secret_arns
  tags                = var.tags
}
