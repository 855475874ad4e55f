# Pass-throughs of the platform module's outputs (terraform/modules/platform/outputs.tf). The two
# kustomize_* outputs are written into k8s/overlays/dev/{settings,aws}.env; see docs/deploy-aws.md.

output "region" {
  description = "AWS region of the environment."
  value       = module.platform.region
}

output "cluster_name" {
  description = "EKS cluster name, for aws eks update-kubeconfig."
  value       = module.platform.cluster_name
}

output "ecr_repository_urls" {
  description = "ECR repository URL per image (airflow, job, serving)."
  value       = module.platform.ecr_repository_urls
}

output "ecr_registry" {
  description = "ECR registry host for docker login."
  value       = module.platform.ecr_registry
}

output "lake_uri" {
  description = "CTLOOP_LAKE_URI of the environment."
  value       = module.platform.lake_uri
}

output "postgres_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS master credentials."
  value       = module.platform.postgres_master_secret_arn
}

output "postgres_app_secret_names" {
  description = "Secrets Manager names of the Airflow and MLflow database logins."
  value       = module.platform.postgres_app_secret_names
}

output "feast_redis_secret_name" {
  description = "Secrets Manager name of the Feast Redis connection string."
  value       = module.platform.feast_redis_secret_name
}

output "kustomize_settings_env" {
  description = "Contents of k8s/overlays/dev/settings.env."
  value       = module.platform.kustomize_settings_env
}

output "kustomize_aws_env" {
  description = "Contents of k8s/overlays/dev/aws.env."
  value       = module.platform.kustomize_aws_env
}

output "airflow_helm_values" {
  description = "Helm values for the Airflow chart; pass with -f after k8s/airflow/values.yaml."
  value       = module.platform.airflow_helm_values
}
