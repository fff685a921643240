variable "primary_region" {
  description = "Where the flag tables are written (operators and the CLI write here only) and the first routers run."
  type        = string
  default     = "us-east-1"
}

variable "secondary_region" {
  description = "The second region: a replica of the flag tables, and routers reading it."
  type        = string
  default     = "eu-west-1"
}

variable "table_name" {
  type    = string
  default = "switchyard-flags"
}

variable "image" {
  description = "The router's image, pushed to a registry both regions pull from (pin a digest)."
  type        = string
}

variable "networks" {
  description = "Per region (keys: the two regions' names): the VPC, the tasks' private subnets, the balancer's subnets, the monitoring network's CIDRs allowed to the admin port, and optionally the Secrets Manager secrets of the router's TLS certificate chain and key in that region (the balancer then forwards 443 to the router's TLS listener)."
  type = map(object({
    vpc_id              = string
    private_subnet_ids  = list(string)
    balancer_subnet_ids = list(string)
    monitoring_cidrs    = list(string)
    tls_secret_arns = optional(object({
      cert = string
      key  = string
    }))
  }))
}

variable "targets" {
  description = "The migration's sides, each with its endpoints, as the router's [targets] takes them: the same in both regions (for other settings per region, edit router.toml.tftpl)."
  type        = map(list(string))
}

variable "default_target" {
  description = "Where tenants without a flag go (flags.default_target)."
  type        = string
}

variable "tenant_from" {
  description = "Where the tenant id comes from ([tenant] from)."
  type        = list(string)
  default     = ["header:x-tenant-id"]
}

variable "tags" {
  type    = map(string)
  default = {}
}
