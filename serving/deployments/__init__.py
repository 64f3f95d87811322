"""Deployments: which engine host loads which model, and each host converging on it live."""
