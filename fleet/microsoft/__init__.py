"""Microsoft integration: identity (msal) in identity.py, every outbound HTTP call in http.py."""
