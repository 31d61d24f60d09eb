"""mlaas4hep.train"""
