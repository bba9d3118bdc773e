"""Observation: metrics, drift, label-free and labelled performance, alerts, dashboards, swap reports."""
