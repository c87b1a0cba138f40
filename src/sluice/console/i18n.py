"""English and Simplified Chinese: the English text is the key, Chinese its translation.

Every string a page shows goes through ``translator(lang)``; tests/console/test_i18n.py checks
that each one used in the templates and the console's code has a Chinese entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LANGUAGES", "ZH", "translator", "MESSAGES"]

LANGUAGES = ("en", "zh")

# Texts the console's code (not the templates) puts on a page: flash messages, refusals and
# values shown as words. Kept here so the catalog test finds them.
MESSAGES = (
    "Saved.", "Key disabled.", "Key enabled.", "Spend reset.", "Key deleted.",
    "Channel created.", "Channel deleted.", "Channel enabled.", "Channel disabled.",
    "Sign in first.", "This page is not available to this sign-in.",
    "The form was missing its security token.", "Too many failed sign-ins; wait a minute.",
    "That key was not accepted.", "Other", "model", "key", "channel", "closed", "open",
    "half_open", "unavailable", "reject", "free", "images", "audio_seconds", "characters",
    "search_units", "calls",
)  # fmt: skip

ZH: dict[str, str] = {
    "24 hours": "24 小时",
    "30 days": "30 天",
    "Actions": "操作",
    "Add a channel": "添加渠道",
    "Allowed models (comma separated, * for all)": "允许的模型（逗号分隔，* 表示全部）",
    "Back to the console": "返回控制台",
    "Balance": "余额",
    "Base URL": "基础 URL",
    "Budget": "预算",
    "Budget (USD)": "预算（美元）",
    "Cached input": "缓存输入",
    "Change this key's state?": "要更改此密钥的状态吗？",
    "Channel": "渠道",
    "Channels": "渠道",
    "Channels of the config file are read-only here; change the file and reload.": (
        "配置文件中的渠道在此只读；请修改配置文件并重新加载。"
    ),
    "Charts by": "图表维度",
    "Concurrent requests": "并发请求数",
    "Console": "控制台",
    "Copied": "已复制",
    "Copy": "复制",
    "Copy the secret now: it is shown only once.": "请立即复制密钥：它只显示这一次。",
    "Cost": "费用",
    "Create": "创建",
    "Create a key": "创建密钥",
    "Created": "创建时间",
    "Delete": "删除",
    "Delete this key for good? Requests with it will fail.": (
        "确定永久删除此密钥吗？使用它的请求将会失败。"
    ),
    "Delete this channel?": "确定删除此渠道吗？",
    "Disable": "停用",
    "Edit": "编辑",
    "Enable": "启用",
    "Error rate": "错误率",
    "Errors": "错误",
    "Expires": "到期",
    "Expires (UTC date)": "到期日期（UTC）",
    "Export CSV": "导出 CSV",
    "Filter": "筛选",
    "First token": "首个令牌",
    "From": "起始",
    "IP allow-list (addresses or CIDRs)": "IP 白名单（地址或 CIDR）",
    "Input": "输入",
    "Key": "密钥",
    "Key created": "密钥已创建",
    "Keys": "密钥",
    "Last 30 days": "最近 30 天",
    "Last used": "最近使用",
    "Latency": "延迟",
    "Leave the key empty to keep it.": "留空则保留原密钥。",
    "Limits": "限额",
    "Mean latency": "平均延迟",
    "Model": "模型",
    "Model patterns": "模型通配",
    "Channels that serve every model matching a pattern: each request is priced by the model "
    "it names.": "以下渠道提供所有匹配该模式的模型：每个请求按其指定的模型计价。",
    "Models": "模型",
    "Models (comma separated, globs allowed)": "模型（逗号分隔，可用通配符）",
    "Models you may use": "可用模型",
    "My key": "我的密钥",
    "Name": "名称",
    "Next": "下一页",
    "No channels.": "没有渠道。",
    "No keys.": "没有密钥。",
    "No models are served.": "没有可用的模型。",
    "No requests yet.": "暂无请求。",
    "Operators sign in with the admin key; key holders with their own sk- key to see its "
    "balance and usage.": (
        "运维人员使用管理密钥登录；密钥持有者使用自己的 sk- 密钥登录，查看余额和用量。"
    ),
    "Other": "其他",
    "Other units": "其他计量单位",
    "Output": "输出",
    "Overrides in the config file": "配置文件中的价格覆盖",
    "Overview": "概览",
    "Page {n} of {m}": "第 {n} 页，共 {m} 页",
    "Prefix": "前缀",
    "Previous": "上一页",
    "Prices": "价格",
    "Priority": "优先级",
    "Recent errors": "最近错误",
    "Recent requests": "最近请求",
    "Refused": "已拒绝",
    "Refused:": "已拒绝：",
    "Requests": "请求数",
    "Requests by day": "每日请求数",
    "Requests per minute": "每分钟请求数",
    "Reset spent": "重置已用额度",
    "Reset this key's spend to zero?": "要将此密钥的已用额度清零吗？",
    "Save": "保存",
    "Search": "搜索",
    "Search by name or prefix": "按名称或前缀搜索",
    "Sign in": "登录",
    "Sign in to Sluice": "登录 Sluice",
    "Sign out": "退出登录",
    "Source": "来源",
    "Spend": "花费",
    "Spend by day": "每日花费",
    "Spent": "已用",
    "Spent / budget": "已用 / 预算",
    "State": "状态",
    "Status": "状态码",
    "Test": "测试",
    "Test model": "测试模型",
    "Test of {name}": "测试 {name}",
    "Time (UTC)": "时间（UTC）",
    "Today": "今天",
    "Tokens in / out": "输入 / 输出令牌",
    "Tokens per minute": "每分钟令牌数",
    "Top keys by spend": "花费最多的密钥",
    "Type": "类型",
    "USD per one million tokens, as billed: the upstream model's price (shipped data file, "
    "then the config's overrides).": (
        "每百万令牌的美元价格，按实际计费：上游模型的价格（内置数据文件，其次为配置中的覆盖）。"
    ),
    "USD per one million tokens.": "每百万令牌的美元价格。",
    "Unpriced models": "未定价模型",
    "Until": "截止",
    "Upstream API key": "上游 API 密钥",
    "Upstream model": "上游模型",
    "Usage log": "用量日志",
    "Weight": "权重",
    "active": "有效",
    "any": "全部",
    "any address": "任意地址",
    "cached": "缓存",
    "concurrent": "并发",
    "config file": "配置文件",
    "default": "默认",
    "disabled": "已停用",
    "error": "错误",
    "errors": "错误",
    "expired": "已过期",
    "failed": "失败",
    "id, prefix or name": "ID、前缀或名称",
    "never": "永不",
    "no price": "无价格",
    "passed": "通过",
    "requests": "请求",
    "runtime": "运行时",
    "success": "成功",
    "unchanged": "不变",
    "unlimited": "不限",
    "{n} keys": "{n} 个密钥",
    "{n} requests": "{n} 个请求",
    # MESSAGES
    "Saved.": "已保存。",
    "Key disabled.": "密钥已停用。",
    "Key enabled.": "密钥已启用。",
    "Spend reset.": "已用额度已重置。",
    "Key deleted.": "密钥已删除。",
    "Channel created.": "渠道已创建。",
    "Channel deleted.": "渠道已删除。",
    "Channel enabled.": "渠道已启用。",
    "Channel disabled.": "渠道已停用。",
    "Sign in first.": "请先登录。",
    "This page is not available to this sign-in.": "当前登录身份无权访问此页面。",
    "The form was missing its security token.": "表单缺少安全令牌。",
    "Too many failed sign-ins; wait a minute.": "登录失败次数过多，请稍后再试。",
    "That key was not accepted.": "该密钥无效。",
    "model": "模型",
    "key": "密钥",
    "channel": "渠道",
    "closed": "正常",
    "open": "熔断",
    "half_open": "半开",
    "unavailable": "不可用",
    "reject": "拒绝",
    "free": "免费",
    "images": "图片",
    "audio_seconds": "音频秒数",
    "characters": "字符",
    "search_units": "搜索单位",
    "calls": "调用",
}


def translator(lang: str) -> Callable[..., str]:
    """``_(text, **values)``: the text in ``lang`` with ``{name}`` placeholders filled."""
    table = ZH if lang == "zh" else {}

    def translate(text: str, **values: Any) -> str:
        found = table.get(text, text)
        return found.format(**values) if values else found

    return translate
