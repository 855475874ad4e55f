variable "name" {
  type        = string
  description = "Name prefix for every network resource, e.g. \"ctloop-prod\"."
}

variable "cidr" {
  type        = string
  description = "IPv4 CIDR block of the VPC."
}

variable "azs" {
  type        = list(string)
  description = "Availability zones to spread subnets over (two or three)."
}

variable "private_subnet_cidrs" {
  type        = list(string)
  description = "One private subnet CIDR per availability zone; EKS nodes, MSK, RDS and Redis live here."
}

variable "public_subnet_cidrs" {
  type        = list(string)
  description = "One public subnet CIDR per availability zone; only NAT gateways and internet-facing load balancers live here."
}

variable "single_nat_gateway" {
  type        = bool
  description = "Use one NAT gateway for all zones (cheaper, for dev) instead of one per zone."
  default     = false
}

variable "cluster_name" {
  type        = string
  description = "EKS cluster name, used to tag subnets for load balancer discovery."
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days to keep VPC flow logs in CloudWatch."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
