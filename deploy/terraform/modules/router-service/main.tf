# Switchyard in one region: tasks on ECS Fargate in private subnets behind a network load
# balancer, scaled on CPU. The balancer forwards port 80 to the tasks' traffic listener (8080)
# and checks /readyz on the admin port (9090), which nothing outside the VPC can reach: the
# tasks' security group lets in 9090 from the balancer and the monitoring network only, and
# the balancer has no listener for it. Called once per region by the root module.

data "aws_region" "current" {}

locals {
  config_dir = "/etc/switchyard"
  state_dir  = "/var/lib/switchyard"
  tls        = var.tls_secret_arns != null
  # The ports the balancer forwards to the tasks: traffic, and TLS traffic when configured.
  listeners = merge(
    { plain = { balancer = 80, task = 8080 } },
    local.tls ? { tls = { balancer = 443, task = 8443 } } : {},
  )
  task_ports = concat([for l in values(local.listeners) : l.task], [9090])
}

resource "aws_cloudwatch_log_group" "router" {
  #checkov:skip=CKV_AWS_158:Encrypted with the KMS key in var.kms_key_arn when the operator gives one; CloudWatch Logs encrypts otherwise.
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_ecs_cluster" "router" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

data "aws_iam_policy_document" "assume_task" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The routers' own role: the flag store's read-only policy, nothing else.
resource "aws_iam_role" "task" {
  name               = "${var.name}-task-${data.aws_region.current.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_task.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "task_reads_flags" {
  role       = aws_iam_role.task.name
  policy_arn = var.router_policy_arn
}

# ECS's role for starting the task: pulling the image and writing its logs.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution-${data.aws_region.current.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_task.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# With TLS, ECS reads the certificate and key secrets into the config container.
data "aws_iam_policy_document" "read_tls_secrets" {
  count = local.tls ? 1 : 0
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.tls_secret_arns.cert, var.tls_secret_arns.key]
  }
}

resource "aws_iam_role_policy" "read_tls_secrets" {
  count  = local.tls ? 1 : 0
  name   = "read-tls-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.read_tls_secrets[0].json
}

resource "aws_ecs_task_definition" "router" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  # The config is written to a task-local volume by a short-lived first container (the
  # router's image has no shell), with the state folder the flags' local copy lives in.
  volume {
    name = "config"
  }

  volume {
    name = "state"
  }

  container_definitions = jsonencode([
    {
      name                   = "config"
      image                  = "public.ecr.aws/docker/library/busybox:1.36"
      essential              = false
      readonlyRootFilesystem = true
      command = ["sh", "-c", join(" && ", concat([
        "printf '%s' \"$ROUTER_TOML\" > ${local.config_dir}/router.toml",
        "chown 10001 ${local.state_dir}",
        ], local.tls ? [
        "mkdir -p ${local.config_dir}/tls",
        "printf '%s' \"$TLS_CERT\" > ${local.config_dir}/tls/cert.pem",
        "printf '%s' \"$TLS_KEY\" > ${local.config_dir}/tls/key.pem",
        "chown 10001 ${local.config_dir}/tls/key.pem",
        "chmod 0400 ${local.config_dir}/tls/key.pem",
      ] : []))]
      environment = [{ name = "ROUTER_TOML", value = var.router_toml }]
      secrets = local.tls ? [
        { name = "TLS_CERT", valueFrom = var.tls_secret_arns.cert },
        { name = "TLS_KEY", valueFrom = var.tls_secret_arns.key },
      ] : []
      mountPoints = [
        { sourceVolume = "config", containerPath = local.config_dir },
        { sourceVolume = "state", containerPath = local.state_dir },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.router.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "config"
        }
      }
    },
    {
      name                   = "switchyard"
      image                  = var.image
      essential              = true
      user                   = "10001"
      readonlyRootFilesystem = true
      command                = ["serve", "--config", "${local.config_dir}/router.toml", "--log-format", "json"]
      dependsOn              = [{ containerName = "config", condition = "SUCCESS" }]
      portMappings           = [for port in local.task_ports : { containerPort = port, protocol = "tcp" }]
      mountPoints = [
        { sourceVolume = "config", containerPath = local.config_dir, readOnly = true },
        { sourceVolume = "state", containerPath = local.state_dir },
      ]
      healthCheck = {
        command     = ["CMD", "switchyard", "ready", "--config", "${local.config_dir}/router.toml"]
        interval    = 10
        timeout     = 3
        retries     = 3
        startPeriod = 20
      }
      # A descriptor per client connection (server.max_connections) and per upstream one.
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      # SIGTERM, then the config's shutdown delay and drain before SIGKILL.
      stopTimeout = 60
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.router.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "router"
        }
      }
    },
  ])

  tags = var.tags
}

# The balancer's own group: clients in on 80, out to the tasks only.
resource "aws_security_group" "balancer" {
  #checkov:skip=CKV_AWS_260:This balancer is the SaaS's public entry point; var.client_cidrs narrows who may connect.
  name        = "${var.name}-balancer"
  description = "Switchyard network load balancer"
  vpc_id      = var.vpc_id

  dynamic "ingress" {
    for_each = local.listeners
    content {
      description = "Client traffic (${ingress.key})"
      from_port   = ingress.value.balancer
      to_port     = ingress.value.balancer
      protocol    = "tcp"
      cidr_blocks = var.client_cidrs
    }
  }

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "balancer_to_tasks" {
  for_each                     = toset([for p in local.task_ports : tostring(p)])
  security_group_id            = aws_security_group.balancer.id
  description                  = "Traffic and the /readyz health check to the tasks"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "Switchyard tasks: traffic and health checks from the balancer, the admin port from monitoring"
  vpc_id      = var.vpc_id

  egress {
    #checkov:skip=CKV_AWS_382:A router reaches its upstreams wherever a migration's two sides are (another account, another region, over the internet or a transit gateway) and DynamoDB; the targets are fixed by its config, not by this rule.
    description = "Upstreams and the flag store"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_balancer" {
  for_each                     = toset([for p in local.task_ports : tostring(p)])
  security_group_id            = aws_security_group.tasks.id
  description                  = "Traffic and the /readyz health check from the balancer"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.balancer.id
}

resource "aws_vpc_security_group_ingress_rule" "admin_from_monitoring" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "Metrics scrape of the admin port"
  ip_protocol       = "tcp"
  from_port         = 9090
  to_port           = 9090
  cidr_ipv4         = each.value
}

resource "aws_lb" "router" {
  #checkov:skip=CKV2_AWS_20:A network balancer passing TCP through; there is no HTTP to redirect (TLS, when used, ends at the router).
  #checkov:skip=CKV_AWS_91:Access logs of a TCP balancer hold only connection tuples; the router's own access log ([access_log]) has the requests.
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = var.balancer_subnet_ids
  security_groups                  = [aws_security_group.balancer.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "router" {
  for_each             = local.listeners
  name                 = "${var.name}-${each.key}"
  port                 = each.value.task
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # On the admin port: /readyz is 503 while the flags are not loaded and from SIGTERM on.
  health_check {
    protocol            = "HTTP"
    port                = "9090"
    path                = "/readyz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "router" {
  #checkov:skip=CKV_AWS_2:A TCP listener passes the bytes through; TLS, when used, ends at the router ([server.tls]).
  #checkov:skip=CKV_AWS_103:As above: the balancer does not terminate TLS.
  for_each          = local.listeners
  load_balancer_arn = aws_lb.router.arn
  port              = each.value.balancer
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.router[each.key].arn
  }

  tags = var.tags
}

resource "aws_ecs_service" "router" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.router.id
  task_definition                    = aws_ecs_task_definition.router.arn
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  desired_count                      = var.desired_count
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = local.listeners
    content {
      target_group_arn = aws_lb_target_group.router[load_balancer.key].arn
      container_name   = "switchyard"
      container_port   = load_balancer.value.task
    }
  }

  # Autoscaling owns the count once the service exists.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.router]
  tags       = var.tags
}

resource "aws_appautoscaling_target" "router" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.router.name}/${aws_ecs_service.router.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  service_namespace  = aws_appautoscaling_target.router.service_namespace
  resource_id        = aws_appautoscaling_target.router.resource_id
  scalable_dimension = aws_appautoscaling_target.router.scalable_dimension
  policy_type        = "TargetTrackingScaling"

  target_tracking_scaling_policy_configuration {
    target_value = var.target_cpu_percent
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    # Out fast, in slowly: each task removed drains its connections first.
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
  }
}
