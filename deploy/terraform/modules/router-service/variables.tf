variable "name" {
  description = "Names the cluster, service, balancer and roles in this region."
  type        = string
  default     = "switchyard"
}

variable "image" {
  description = "The router's container image (the top-level Dockerfile), pinned by digest in production."
  type        = string
}

variable "router_toml" {
  description = "The router's config for this region. It must listen on 0.0.0.0:8080 (traffic) and 0.0.0.0:9090 (admin: the balancer's health check and the metrics scrape reach it; nothing public does)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the tasks and the balancer run in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets for the tasks (no public addresses), one per availability zone."
  type        = list(string)
}

variable "balancer_subnet_ids" {
  description = "Subnets for the network load balancer: public ones for an internet-facing balancer."
  type        = list(string)
}

variable "internal" {
  description = "An internal balancer (reached from inside the network only) instead of an internet-facing one."
  type        = bool
  default     = false
}

variable "client_cidrs" {
  description = "Who may send traffic to port 80 of the balancer (and so to the tasks' 8080)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "monitoring_cidrs" {
  description = "Who may reach the admin port (9090) for the metrics scrape, besides the balancer's health checks. Keep it to the monitoring network."
  type        = list(string)
  default     = []
}

variable "tls_secret_arns" {
  description = "Secrets Manager secrets holding the router's TLS certificate chain and key (PEM), as { cert = ARN, key = ARN }: the balancer then forwards 443 to the router's TLS listener (8443), which the config must declare with cert = \"/etc/switchyard/tls/cert.pem\" and key = \"/etc/switchyard/tls/key.pem\". null: plaintext on 80 only."
  type = object({
    cert = string
    key  = string
  })
  default = null
}

variable "router_policy_arn" {
  description = "The flag store's read-only policy (the flag-store module's router_policy_arn), for the task role."
  type        = string
}

variable "cpu" {
  description = "Task CPU units (1024 = one vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory, MiB."
  type        = number
  default     = 2048
}

variable "desired_count" {
  description = "Tasks at first; autoscaling moves it between min_count and max_count."
  type        = number
  default     = 3
}

variable "min_count" {
  type    = number
  default = 3
}

variable "max_count" {
  type    = number
  default = 30
}

variable "target_cpu_percent" {
  description = "Average CPU the autoscaling keeps the service at."
  type        = number
  default     = 60
}

variable "log_retention_days" {
  type    = number
  default = 365
}

variable "kms_key_arn" {
  description = "A KMS key for the log group; null: CloudWatch's own encryption."
  type        = string
  default     = null
}

variable "tags" {
  type    = map(string)
  default = {}
}
