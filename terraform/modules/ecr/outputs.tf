output "repository_urls" {
  description = "Repository URL per image name (airflow, job, serving)."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "registry" {
  description = "Registry host (<account>.dkr.ecr.<region>.amazonaws.com) for docker login."
  value       = split("/", values(aws_ecr_repository.this)[0].repository_url)[0]
}
