variable "table_name" {
  description = "The flags table; the audit table is TABLE-audit. Routers use dynamodb://TABLE?region=REGION."
  type        = string
  default     = "switchyard-flags"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,249}$", var.table_name))
    error_message = "A DynamoDB table name is 3 to 249 characters of letters, digits, '_', '-' and '.' (the audit table adds 6)."
  }
}

variable "replica_regions" {
  description = "Extra regions for a global table (routers there read their local replica). Empty: one region. Operators must write in this module's region only: see deploy/terraform/README.md."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "A customer managed KMS key for server-side encryption of the primary tables (replicas use their region's AWS managed key); null uses the AWS managed key (aws/dynamodb)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse DeleteTable on both tables. Turn off only to tear the store down on purpose."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for both tables and the policies."
  type        = map(string)
  default     = {}
}
