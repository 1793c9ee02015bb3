"""What leaves the process: the span shipper and export process, the span file, the metric readers and exporters.

None of it runs per request: the layers (``interposer/layers``) hand records and measurements over, and this
package carries them out of the request thread and the process.
"""
