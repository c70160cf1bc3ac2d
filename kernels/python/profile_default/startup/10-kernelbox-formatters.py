# kernelbox: extra rich-output formatters for the python3 kernel.
#
# Registers, on the running IPython shell:
#   e2b/data          pandas.DataFrame -> {column: [values...]} (index dropped, Timestamps as ISO
#                     strings, NaN/None/NaT as null); only when pandas is already imported
#   e2b/chart         matplotlib Figure -> e2b_charts.chart_figure_to_dict(fig); {} on any failure
#   application/json  list/dict -> serialised with orjson (numpy values, non-str keys) and parsed
#                     back, metadata {"expanded": True}; falls back to IPython's formatter on TypeError
#
# Nothing heavy is imported here: pandas/matplotlib are looked up in sys.modules at format time.


def _kernelbox_register_formatters():
    import datetime
    import math
    import sys

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter, JSONFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    if shell is None:
        return
    display_formatter = shell.display_formatter

    def plain_key(key):
        if isinstance(key, str):
            return key
        if isinstance(key, bool):
            return "true" if key else "false"
        if hasattr(key, "isoformat") and not _is_missing(key):
            return key.isoformat()
        return str(key)

    def _is_missing(value):
        if value is None:
            return True
        if isinstance(value, float):
            return math.isnan(value)
        pd = sys.modules.get("pandas")
        if pd is not None:
            try:
                return value is pd.NaT or value is pd.NA or bool(pd.isna(value))
            except (TypeError, ValueError):
                return False
        return False

    def plain_value(value):
        """Turn one DataFrame cell (or nested value) into something json.dumps accepts."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return None if (math.isnan(value) or math.isinf(value)) else value
        if isinstance(value, dict):
            return {plain_key(k): plain_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [plain_value(v) for v in value]
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(value, np.generic):
                return plain_value(value.item()) if not isinstance(value, np.datetime64) else plain_value(
                    _datetime64(value)
                )
            if isinstance(value, np.ndarray):
                return [plain_value(v) for v in value.tolist()]
        if _is_missing(value):
            return None
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()  # pandas.Timestamp is a datetime subclass
        if isinstance(value, datetime.timedelta):
            return str(value)
        return str(value)

    def _datetime64(value):
        pd = sys.modules.get("pandas")
        if pd is not None:
            return pd.Timestamp(value)
        return str(value)

    class KernelboxDataFormatter(BaseFormatter):
        """e2b/data for pandas DataFrames."""

        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")

        def __call__(self, obj):
            pd = sys.modules.get("pandas")
            if pd is not None and isinstance(obj, pd.DataFrame):
                columns = obj.to_dict(orient="list")
                return {plain_key(k): [plain_value(v) for v in col] for k, col in columns.items()}
            return super().__call__(obj)

    class KernelboxChartFormatter(BaseFormatter):
        """e2b/chart for matplotlib figures."""

        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")

        def __call__(self, obj):
            mpl_figure = sys.modules.get("matplotlib.figure")
            if mpl_figure is not None and isinstance(obj, mpl_figure.Figure):
                try:
                    from e2b_charts import chart_figure_to_dict

                    return chart_figure_to_dict(obj)
                except Exception:
                    return {}
            return super().__call__(obj)

    class KernelboxJSONFormatter(JSONFormatter):
        """application/json for list and dict through orjson."""

        def __call__(self, obj):
            if isinstance(obj, (list, dict)):
                try:
                    import orjson

                    data = orjson.loads(
                        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
                    )
                    return data, {"expanded": True}
                except TypeError:  # orjson.JSONEncodeError is a TypeError
                    pass
            return super().__call__(obj)

    for cls in (KernelboxDataFormatter, KernelboxChartFormatter, KernelboxJSONFormatter):
        formatter = cls(parent=display_formatter)
        display_formatter.formatters[formatter.format_type] = formatter


try:
    _kernelbox_register_formatters()
finally:
    del _kernelbox_register_formatters
