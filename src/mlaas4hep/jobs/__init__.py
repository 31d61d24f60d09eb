"""mlaas4hep.jobs"""
