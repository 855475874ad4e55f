output "role_arns" {
  description = "IRSA role ARN per workload (lander, job, serving, feast, mlflow, airflow)."
  value       = { for workload, role in module.role : workload => role.role_arn }
}

output "airflow_service_accounts" {
  description = "Airflow service accounts trusted by the airflow role (as the Helm chart names them)."
  value       = local.airflow_service_accounts
}
