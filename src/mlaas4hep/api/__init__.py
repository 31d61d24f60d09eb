"""mlaas4hep.api"""
