variable "name" {
  type        = string
  description = "Repository namespace, e.g. \"ctloop-prod\" gives ctloop-prod/airflow, ctloop-prod/job, ctloop-prod/serving."
}

variable "repositories" {
  type        = list(string)
  description = "Image names to create under the namespace."
  default     = ["airflow", "job", "serving"]
}

variable "keep_images" {
  type        = number
  description = "Number of most recent images kept per repository; older ones expire."
  default     = 30
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
