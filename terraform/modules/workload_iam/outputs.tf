output "role_arns" {
  description = "IRSA role ARN per workload (lander, job, serving, feast, mlflow, airflow)."
  value = {
    lander  = module.lander.role_arn
    job     = module.job.role_arn
    serving = module.serving.role_arn
    feast   = module.feast.role_arn
    mlflow  = module.mlflow.role_arn
    airflow = module.airflow.role_arn
  }
}

output "airflow_service_accounts" {
  description = "Airflow service accounts trusted by the airflow role (as the Helm chart names them)."
  value       = local.airflow_service_accounts
}
