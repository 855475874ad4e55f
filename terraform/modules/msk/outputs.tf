output "cluster_arn" {
  description = "ARN of the MSK cluster (kafka-cluster:Connect resource)."
  value       = aws_msk_cluster.this.arn
}

output "bootstrap_brokers_iam" {
  description = "Comma-separated TLS + IAM bootstrap brokers (port 9098), the value of CTLOOP_KAFKA_BOOTSTRAP."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "topic_arn_prefix" {
  description = "ARN prefix of this cluster's topics; append a topic name or pattern for kafka-cluster topic actions."
  value       = "${replace(aws_msk_cluster.this.arn, ":cluster/", ":topic/")}/"
}

output "group_arn_prefix" {
  description = "ARN prefix of this cluster's consumer groups; append a group name or pattern."
  value       = "${replace(aws_msk_cluster.this.arn, ":cluster/", ":group/")}/"
}

output "security_group_id" {
  description = "Security group of the brokers."
  value       = aws_security_group.msk.id
}
