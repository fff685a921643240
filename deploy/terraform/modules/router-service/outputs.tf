output "balancer_dns_name" {
  description = "Where clients (or DNS records) send traffic in this region."
  value       = aws_lb.router.dns_name
}

output "service_name" {
  value = aws_ecs_service.router.name
}

output "task_role_arn" {
  description = "The routers' role in this region (the flag store's read-only policy is attached)."
  value       = aws_iam_role.task.arn
}

output "security_group_id" {
  value = aws_security_group.tasks.id
}
