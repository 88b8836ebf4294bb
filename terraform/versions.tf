terraform {
  # 1.9 lets a variable's validation refer to other variables (concurrency needs a whole CPU,
  # the Firestore timeout must be shorter than the function's).
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 8.0"
    }
  }
}
